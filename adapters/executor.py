"""A bounded thread pool for synchronous provider SDKs, owned by an adapter unless one is passed in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class SdkThreads:
    """Runs blocking SDK calls off the event loop, in a pool passed in or created (and shut down) here."""

    def __init__(self, executor: ThreadPoolExecutor | None, *, max_workers: int, name: str) -> None:
        self._owned = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)

    async def run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def shutdown(self) -> None:
        if self._owned:
            self._executor.shutdown(wait=False, cancel_futures=True)
