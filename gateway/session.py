"""One client socket from handshake to close: admission, recovery, then commands until it ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from starlette.websockets import WebSocket

from gateway.auth import AuthError, Identity, TokenVerifier, bearer_token
from gateway.connections import Connection, ConnectionRegistry, Draining, TooManyConnections
from gateway.inbox_service import InboxService
from gateway.metrics import GatewayMetrics
from gateway.origins import OriginPolicy
from gateway.protocol import (
    ProtocolError,
    ack_frame,
    close_for,
    error_frame,
    inbox_frame,
    parse,
    pong_frame,
    refreshed_frame,
    welcome_frame,
)
from kernel.errors import InboxUnavailable
from schemas.websocket import (
    AuthReason,
    CloseReason,
    Command,
    ErrorCode,
    ListInbox,
    Mark,
    MarkAllRead,
    Ping,
    Refresh,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle_timeout_seconds: float  # 0: no idle timeout


class Sessions:
    """The `/ws` endpoint: translates between the socket and the inbox service, nothing more."""

    def __init__(
        self,
        verifier: TokenVerifier,
        origins: OriginPolicy,
        service: InboxService,
        connections: ConnectionRegistry,
        metrics: GatewayMetrics,
        policy: SessionPolicy,
    ) -> None:
        self._verifier = verifier
        self._origins = origins
        self._service = service
        self._connections = connections
        self._metrics = metrics
        self._policy = policy

    async def endpoint(self, websocket: WebSocket) -> None:
        try:
            identity = self._authenticate(websocket)
        except AuthError as exc:
            self._metrics.auth_failures.labels(reason=exc.reason.value).inc()
            # Accepted first so the client receives the code and reason; a refused handshake carries neither.
            await websocket.accept()
            closing = close_for(exc.reason)
            await websocket.close(closing.code, closing.value)
            return
        await websocket.accept()
        refusal = self._refusal(identity.user_id)
        if refusal is not None:
            self._metrics.connections_refused.labels(reason=refusal.value).inc()
            await websocket.close(refusal.code, refusal.value)
            return
        user_id = identity.user_id
        # From here to registration nothing awaits, so no live notification can slip between the
        # recovered ones and the live ones, nor arrive twice.
        first = self._first_frames(user_id, identity, websocket.query_params.get("since"))
        async with self._connections.connect(
            user_id, websocket, expires_at=identity.expires_at, first_frames=first
        ) as connection:
            reader = asyncio.create_task(self._read(websocket, connection, identity), name="gateway-reader")
            try:
                await connection.ended.wait()
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    def _authenticate(self, websocket: WebSocket) -> Identity:
        headers = websocket.headers
        if not self._origins.allows(headers.get("origin"), headers.get("host"), websocket.url.scheme):
            raise AuthError(AuthReason.ORIGIN_NOT_ALLOWED)
        token = bearer_token(websocket.headers.get("authorization"), websocket.query_params.get("token"))
        return self._verifier.verify(token)

    def _refusal(self, user_id: str) -> CloseReason | None:
        if not self._service.ready:
            return CloseReason.NOT_READY
        try:
            self._connections.admit(user_id)
        except TooManyConnections:
            return CloseReason.TOO_MANY_CONNECTIONS
        except Draining:
            return CloseReason.DRAINING
        return None

    def _first_frames(self, user_id: str, identity: Identity, since: str | None) -> list[bytes]:
        unread = self._service.unread(user_id)
        if since is None:
            return [welcome_frame(user_id, unread=unread, expires_at=identity.expires_at)]
        # Recovered frames carry today's unread count: the badge is right as soon as the first one shows. They
        # and the welcome must fit the new connection's queue, or it would be closed as slow on every attempt.
        missed = self._service.recover(
            user_id, since, unread=unread, max_frames=self._connections.queue_size - 1
        )
        if missed is None:
            return [welcome_frame(user_id, unread=unread, expires_at=identity.expires_at, recovered=False)]
        welcome = welcome_frame(
            user_id, unread=unread, expires_at=identity.expires_at, recovered=True, missed=len(missed)
        )
        return [welcome, *missed]

    async def _read(self, websocket: WebSocket, connection: Connection, identity: Identity) -> None:
        idle = self._policy.idle_timeout_seconds
        while True:
            try:
                async with asyncio.timeout(idle if idle > 0 else None):
                    message = await websocket.receive()
            except TimeoutError:
                self._metrics.connections_closed.labels(reason=CloseReason.IDLE_TIMEOUT.value).inc()
                connection.close(CloseReason.IDLE_TIMEOUT)
                return
            if message["type"] == "websocket.disconnect":
                # The client left (or answered the server's close): the session is over.
                connection.ended.set()
                return
            connection.reply(await self._answer(connection, identity, message.get("text")))

    async def _answer(self, connection: Connection, identity: Identity, text: str | None) -> bytes:
        try:
            return await self._execute(connection, identity, parse(text))
        except ProtocolError as error:
            return error_frame(error)

    async def _execute(self, connection: Connection, identity: Identity, command: Command) -> bytes:
        user_id = identity.user_id
        if isinstance(command, Ping):
            return pong_frame(command.id)
        if isinstance(command, ListInbox):
            page = self._service.page(
                user_id, limit=command.limit, before=command.before, archived=command.archived
            )
            return inbox_frame(page, unread=self._service.unread(user_id), request_id=command.id)
        if isinstance(command, Refresh):
            return self._refresh(connection, user_id, command)
        try:
            if isinstance(command, Mark):
                unread = await self._service.mark(user_id, command.type, command.ids)
            else:
                assert isinstance(command, MarkAllRead)
                unread = await self._service.mark_all_read(user_id)
        except InboxUnavailable as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, str(exc), command.id) from None
        return ack_frame(unread=unread, request_id=command.id)

    def _refresh(self, connection: Connection, user_id: str, command: Refresh) -> bytes:
        try:
            renewed = self._verifier.verify(command.token)
        except AuthError as exc:
            self._metrics.auth_failures.labels(reason=exc.reason.value).inc()
            raise ProtocolError(ErrorCode.INVALID_TOKEN, close_for(exc.reason).value, command.id) from None
        if renewed.user_id != user_id:
            self._metrics.auth_failures.labels(reason=AuthReason.INVALID_CLAIMS.value).inc()
            raise ProtocolError(ErrorCode.INVALID_TOKEN, "the token is for another user", command.id)
        connection.expire_at(renewed.expires_at)
        return refreshed_frame(expires_at=renewed.expires_at, request_id=command.id)
