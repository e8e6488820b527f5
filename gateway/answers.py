"""Commands waiting for the feed record that answers them, by command id: the gateway acknowledges a change
once the owner has applied it, with the unread count the owner computed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from kernel.errors import InboxUnavailable


class Answers:
    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[int]] = {}

    @contextlib.contextmanager
    def expect(self, command_id: str) -> Iterator[asyncio.Future[int]]:
        """A future for the unread count the answer carries, registered for the duration of the block (so
        before the command is written: the answer may come back before the write returns)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        try:
            yield future
        finally:
            del self._waiting[command_id]
            if future.done() and not future.cancelled():
                future.exception()  # retrieved, so asyncio does not log an answer that came too late
            future.cancel()

    def awaited(self, command_id: str) -> bool:
        """Whether a command of this instance waits for `command_id` (others' answers are not parsed)."""
        return command_id in self._waiting

    def answer(self, command_id: str, unread: int) -> None:
        future = self._waiting.get(command_id)
        if future is not None and not future.done():
            future.set_result(unread)

    def fail(self, command_id: str, error: InboxUnavailable) -> None:
        future = self._waiting.get(command_id)
        if future is not None and not future.done():
            future.set_exception(error)

    def fail_all(self, error: InboxUnavailable) -> None:
        """The feed was interrupted: the answers may have gone by unseen."""
        for command_id in list(self._waiting):
            self.fail(command_id, error)
