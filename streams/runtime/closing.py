"""Closing what the worker opened (provider clients, connection pools, thread pools) when it stops."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mode import Service

log = logging.getLogger("herald.worker")


class Closing(Service):
    """A mode service whose only work is on stop: each closer runs once, and one failing spares the rest."""

    def __init__(self, closers: Sequence[Callable[[], Awaitable[None]]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._closers = list(closers)

    async def on_stop(self) -> None:
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()
