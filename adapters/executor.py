"""A provider's own thread pool for a synchronous SDK, sized to the calls it may have in flight, so one slow
provider never holds the threads another needs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class SdkThreads:
    """Runs blocking SDK calls off the event loop, at most `max_workers` at once; later calls wait their
    turn."""

    def __init__(self, max_workers: int, *, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)

    def submit(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """Start `call` in a thread; the future ends with its result (a plain future, not a task: one left
        pending at close is no error)."""
        return asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def run(self, call: Callable[[], T]) -> T:
        return await self.submit(call)

    def shutdown(self) -> None:
        """Cancel the calls still queued; one already running ends on its own timeout."""
        self._executor.shutdown(wait=False, cancel_futures=True)
