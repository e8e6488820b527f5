"""The inbox's operations as a gateway serves them, shared by socket and HTTP: reads from the owner, changes
as commands answered on the feed, and the feed's records fanned out to this instance's sockets."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from pydantic import ValidationError

from gateway.answers import Answers
from gateway.commands import CommandWriter
from gateway.connections import ConnectionRegistry
from gateway.feed import FeedRecord
from gateway.metrics import GatewayMetrics
from gateway.owner import Owner
from kernel.errors import InboxUnavailable
from schemas.inbox import FeedKind, InboxAction, InboxCommand, PageRequest, SessionReply, SessionRequest
from schemas.websocket import CloseReason, RecoveryOutcome

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _command_id() -> str:
    return f"cmd_{uuid.uuid4().hex}"


class InboxService:
    """The feed's sink, and what clients may read and change."""

    def __init__(
        self,
        owner: Owner,
        writer: CommandWriter,
        connections: ConnectionRegistry,
        metrics: GatewayMetrics,
        *,
        answer_timeout_seconds: float,
        clock_ms: Callable[[], int] = _now_ms,
        command_id: Callable[[], str] = _command_id,
    ) -> None:
        self._owner = owner
        self._writer = writer
        self._connections = connections
        self._metrics = metrics
        self._answers = Answers()
        self._answer_timeout = answer_timeout_seconds
        self._clock_ms = clock_ms
        self._command_id = command_id
        # Whether the feed is positioned: until then a socket could miss records, and a command its answer.
        self.ready = False

    # --- the feed's sink ---------------------------------------------------------------------------------
    def positioned(self) -> None:
        self.ready = True

    def feed(self, records: Sequence[FeedRecord]) -> None:
        for record in records:
            if record.command_id is not None and self._answers.awaited(record.command_id):
                self._answer(record)
            if record.pushed:
                self._connections.deliver(
                    record.user_id,
                    record.seq,
                    record.frame,
                    notification=record.kind is FeedKind.NOTIFICATION,
                )

    def lost(self) -> None:
        """Sockets may have missed records: they reconnect (elsewhere, or here once positioned again) with
        `since`, which recovers what they missed; commands waiting for an answer fail now."""
        self.ready = False
        self._answers.fail_all(InboxUnavailable("the feed was interrupted"))
        closed = self._connections.close_every(CloseReason.GOING_AWAY)
        if closed:
            log.warning("the feed was interrupted: closing %d sockets so they reconnect", len(closed))
            self._metrics.connections_closed.labels(reason=CloseReason.GOING_AWAY.value).inc(len(closed))

    def _answer(self, record: FeedRecord) -> None:
        assert record.command_id is not None
        try:
            unread = orjson.loads(record.frame).get("unread")
        except (orjson.JSONDecodeError, AttributeError):
            unread = None
        if type(unread) is not int:
            self._metrics.invalid_records.inc()
            log.warning("an answer on the feed without an unread count")
            self._answers.fail(record.command_id, InboxUnavailable("the owner's answer does not decode"))
            return
        self._answers.answer(record.command_id, unread)

    # --- clients -----------------------------------------------------------------------------------------
    async def session(self, user_id: str, since: str | None, *, max_frames: int) -> SessionReply:
        """What a new socket starts with; with `since`, a reply that recovers nothing is counted as failed,
        and so is one with more missed frames than asked for (the owner should not send those)."""
        try:
            request = SessionRequest(user_id=user_id, since=since, max_frames=max_frames)
        except ValidationError:
            # A `since` no notification id can be (empty, too long): no inbox holds it; nothing is recovered.
            request = SessionRequest(user_id=user_id, max_frames=max_frames)
        reply = await self._owner.session(request)
        if since is None:
            return reply
        if request.since is None or not reply.recovered or len(reply.missed) > max_frames:
            reply = SessionReply(seq=reply.seq, unread=reply.unread, recovered=False)
        outcome = RecoveryOutcome.RECOVERED if reply.recovered else RecoveryOutcome.FAILED
        self._metrics.recoveries.labels(outcome=outcome.value).inc()
        return reply

    async def unread(self, user_id: str) -> int:
        return (await self._owner.session(SessionRequest(user_id=user_id))).unread

    async def page(self, user_id: str, *, limit: int, before: str | None, archived: bool) -> dict[str, Any]:
        """The `inbox` reply's body, newest first, cut by the owner to the reply's byte budget."""
        request = PageRequest(user_id=user_id, limit=limit, before=before, archived=archived)
        return await self._owner.page(request)

    async def change(self, user_id: str, action: InboxAction, ids: Sequence[str] = ()) -> int:
        """Send the change to the owner and wait for its answer on the feed; returns the unread count."""
        if not self.ready:
            raise InboxUnavailable("the feed is not positioned")
        command = InboxCommand(
            command_id=self._command_id(),
            user_id=user_id,
            action=action,
            ids=list(dict.fromkeys(ids)),
            at=self._clock_ms(),
        )
        try:
            async with asyncio.timeout(self._answer_timeout):
                with self._answers.expect(command.command_id) as answer:
                    await self._writer.write(command)
                    unread = await answer
        except TimeoutError:
            raise InboxUnavailable("the inbox's owner did not answer in time") from None
        self._metrics.inbox_changes.inc()
        return unread
