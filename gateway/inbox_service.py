"""The inbox's operations, shared by socket and HTTP: what a client may read and change, and who is told."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from gateway.connections import ConnectionRegistry
from gateway.inbox import Entry, Inbox, Page
from gateway.inbox_log import InboxWriter
from gateway.metrics import GatewayMetrics
from gateway.protocol import fit, notification_frame, update_frame
from kernel.settings import GATEWAY_FRAME_OVERHEAD_BYTES
from schemas.inbox import InboxAttribute, InboxStateChange
from schemas.notifications import InAppNotification
from schemas.websocket import RecoveryOutcome

log = logging.getLogger(__name__)

# What each marking command sets.
MARKS: dict[str, tuple[InboxAttribute, bool]] = {
    "mark_read": (InboxAttribute.READ, True),
    "mark_unread": (InboxAttribute.READ, False),
    "archive": (InboxAttribute.ARCHIVED, True),
    "unarchive": (InboxAttribute.ARCHIVED, False),
}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class InboxService:
    """Feeds the inbox from the topics (the feed's sink) and serves and changes it for clients."""

    def __init__(
        self,
        inbox: Inbox,
        writer: InboxWriter,
        connections: ConnectionRegistry,
        metrics: GatewayMetrics,
        *,
        reply_bytes: int,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self.inbox = inbox
        self._writer = writer
        self._connections = connections
        self._metrics = metrics
        # The most a page of the inbox, or the notifications recovered on a reconnect, may take in bytes.
        self._reply_bytes = reply_bytes
        self._clock_ms = clock_ms
        self.ready = False

    # --- the feed's sink ---------------------------------------------------------------------------------
    def notification(self, notification: InAppNotification, raw: bytes) -> None:
        user_id = notification.recipient
        entry = self.inbox.add(user_id, notification.notification_id, raw)
        if entry is None:
            return  # a replay of one already kept: neither kept nor pushed twice
        self._metrics.inbox_entries.set(len(self.inbox))
        if self.ready and self._connections.connected(user_id):
            self._connections.publish(user_id, notification_frame(entry, unread=self.inbox.unread(user_id)))

    def state(self, change: InboxStateChange) -> None:
        changed = self.inbox.apply(change)
        if changed and self.ready:
            self._tell(change.user_id, changed)

    def caught_up(self) -> None:
        self.inbox.forget_pending()
        self._metrics.inbox_entries.set(len(self.inbox))
        self.ready = True

    # --- clients -----------------------------------------------------------------------------------------
    def unread(self, user_id: str) -> int:
        return self.inbox.unread(user_id)

    def page(self, user_id: str, *, limit: int, before: str | None, archived: bool) -> Page:
        """At most `limit` entries, fewer when more would not fit the reply's byte budget."""
        page = self.inbox.page(user_id, limit=limit, before=before, archived=archived)
        return fit(page, self._reply_bytes)

    def recover(self, user_id: str, since: str, *, unread: int, max_frames: int) -> list[bytes] | None:
        """The notification frames after `since`, oldest first, each with `unread`; None (counted as failed)
        if that point is not kept, or if what was missed is more than `max_frames` frames or than a page's
        byte budget: the client then reloads with `list`, which pages within that budget."""
        missed = self.inbox.since(user_id, since)
        frames = None if missed is None else self._within_budget(missed, unread, max_frames)
        outcome = RecoveryOutcome.FAILED if frames is None else RecoveryOutcome.RECOVERED
        self._metrics.recoveries.labels(outcome=outcome.value).inc()
        return frames

    def _within_budget(self, missed: list[Entry], unread: int, max_frames: int) -> list[bytes] | None:
        if len(missed) > max_frames:
            return None
        # The welcome that goes before them is far smaller than a frame's overhead allowance.
        room = self._reply_bytes - GATEWAY_FRAME_OVERHEAD_BYTES
        frames: list[bytes] = []
        for entry in missed:
            frame = notification_frame(entry, unread=unread)
            room -= len(frame)
            if room < 0:
                return None
            frames.append(frame)
        return frames

    async def mark(self, user_id: str, command: str, ids: Sequence[str]) -> int:
        """Apply a marking command to the user's notifications among `ids`; returns the unread count.

        Ids the inbox does not hold are ignored, so a client cannot write registers for arbitrary keys."""
        attribute, value = MARKS[command]
        at = self._clock_ms()
        changes = [
            InboxStateChange(user_id=user_id, attribute=attribute, value=value, notification_id=i, at=at)
            for i in dict.fromkeys(ids)
            if self.inbox.get(user_id, i) is not None
        ]
        await self._commit(user_id, changes)
        return self.inbox.unread(user_id)

    async def mark_all_read(self, user_id: str) -> int:
        newest = self.inbox.newest(user_id)
        if newest is not None:
            change = InboxStateChange(
                user_id=user_id,
                attribute=InboxAttribute.READ,
                value=True,
                up_to=newest.notification_id,
                at=self._clock_ms(),
            )
            await self._commit(user_id, [change])
        return self.inbox.unread(user_id)

    async def _commit(self, user_id: str, changes: list[InboxStateChange]) -> None:
        if not changes:
            return
        # Durable first: a change the broker refused must not show on this instance only.
        await self._writer.write(changes)
        self._metrics.inbox_changes.inc(len(changes))
        # Applied here at once (read-your-writes); when the record comes back from the topic it changes
        # nothing more, while every other instance applies it and tells its own connections.
        changed: dict[str, Entry] = {}
        for change in changes:
            for entry in self.inbox.apply(change):
                changed[entry.notification_id] = entry
        if changed:
            self._tell(user_id, list(changed.values()))

    def _tell(self, user_id: str, entries: list[Entry]) -> None:
        if self._connections.connected(user_id):
            frame = update_frame(entries, unread=self.inbox.unread(user_id))
            self._connections.publish(user_id, frame, notification=False)
