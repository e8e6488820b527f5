"""One client socket from handshake to close: admission, its snapshot from the owner (and recovery), then
commands until it ends."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson
from starlette.datastructures import Headers, QueryParams
from starlette.types import Scope
from starlette.websockets import WebSocket

from gateway.auth import AuthError, Identity, TokenVerifier, bearer_token
from gateway.connections import Connection, ConnectionRegistry, Draining, TooManyConnections
from gateway.inbox_service import InboxService
from gateway.metrics import GatewayMetrics
from gateway.origins import OriginPolicy
from gateway.preference_center import PreferenceCenter
from gateway.protocol import (
    ProtocolError,
    ack_frame,
    close_for,
    error_frame,
    inbox_frame,
    parse,
    pong_frame,
    preferences_frame,
    refreshed_frame,
    welcome_frame,
)
from kernel.errors import InboxUnavailable, PreferencesRefused, PreferencesUnavailable
from schemas.inbox import InboxAction
from schemas.websocket import (
    AuthReason,
    CloseReason,
    Command,
    ErrorCode,
    GetPreferences,
    ListInbox,
    Mark,
    MarkAllRead,
    Ping,
    Refresh,
    SetPreferences,
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
        preferences: PreferenceCenter,
        connections: ConnectionRegistry,
        metrics: GatewayMetrics,
        policy: SessionPolicy,
    ) -> None:
        self._verifier = verifier
        self._origins = origins
        self._service = service
        self._preferences = preferences
        self._connections = connections
        self._metrics = metrics
        self._policy = policy

    async def endpoint(self, websocket: WebSocket) -> None:
        try:
            identity, since = self._handshake(websocket.scope)
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
        async with self._connections.connect(
            user_id, websocket, expires_at=identity.expires_at
        ) as connection:
            # Registered first, so the user's feed records are held from here; the snapshot then says which
            # of them it already covers, and nothing is lost or sent twice in between.
            if not await self._start(connection, identity, since):
                await connection.ended.wait()
                return
            await connection.serve(self._read(websocket, connection, identity))
            # The server may have closed it: its close frame goes out (or times out) before the socket ends.
            await connection.ended.wait()

    def _handshake(self, scope: Scope) -> tuple[Identity, str | None]:
        """Whose socket it is, and the `since` it asked for. Read from the ASGI scope rather than through
        Starlette's `WebSocket`, which would keep its parsed headers, URL and query (the token with them) for
        as long as the socket is open."""
        headers = Headers(scope=scope)
        query = QueryParams(scope.get("query_string", b""))
        if not self._origins.allows(headers.get("origin"), headers.get("host"), scope.get("scheme", "ws")):
            raise AuthError(AuthReason.ORIGIN_NOT_ALLOWED)
        token = bearer_token(headers.get("authorization"), query.get("token"))
        return self._verifier.verify(token), query.get("since")

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

    async def _start(self, connection: Connection, identity: Identity, since: str | None) -> bool:
        """Queue the welcome, what was missed and the records held meanwhile; False if the socket was closed
        instead (the owner did not answer: the client retries)."""
        # What was missed and the welcome must fit the new connection's queue, or it would be closed as slow
        # on every attempt.
        max_frames = max(1, self._connections.queue_size - 1)
        try:
            reply = await self._service.session(identity.user_id, since, max_frames=max_frames)
        except InboxUnavailable as exc:
            log.info("refusing a connection: %s", exc)
            self._metrics.connections_refused.labels(reason=CloseReason.NOT_READY.value).inc()
            connection.close(CloseReason.NOT_READY)
            return False
        if since is None:
            welcome = welcome_frame(identity.user_id, unread=reply.unread, expires_at=identity.expires_at)
        else:
            welcome = welcome_frame(
                identity.user_id,
                unread=reply.unread,
                expires_at=identity.expires_at,
                recovered=bool(reply.recovered),
                missed=len(reply.missed),
            )
        first = [(welcome, False), *((orjson.dumps(missed), True) for missed in reply.missed)]
        return connection.begin(reply.seq, first)

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
                connection.left()
                return
            if connection.closed:
                return  # closed by the server (too slow, expired …): nothing more is answered
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
        if isinstance(command, Refresh):
            return self._refresh(connection, user_id, command)
        if isinstance(command, GetPreferences | SetPreferences):
            return await self._preference_center(user_id, command)
        try:
            if isinstance(command, ListInbox):
                page = await self._service.page(
                    user_id, limit=command.limit, before=command.before, archived=command.archived
                )
                return inbox_frame(page, request_id=command.id)
            if isinstance(command, Mark):
                unread = await self._service.change(user_id, InboxAction(command.type), command.ids)
            else:
                assert isinstance(command, MarkAllRead)
                unread = await self._service.change(user_id, InboxAction.MARK_ALL_READ)
        except InboxUnavailable as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, str(exc), command.id) from None
        return ack_frame(unread=unread, request_id=command.id)

    async def _preference_center(self, user_id: str, command: GetPreferences | SetPreferences) -> bytes:
        try:
            if isinstance(command, SetPreferences):
                view = await self._preferences.change(user_id, command.changes)
            else:
                view = await self._preferences.view(user_id)
        except PreferencesRefused as exc:
            raise ProtocolError(ErrorCode(exc.reason), exc.detail, command.id) from None
        except PreferencesUnavailable as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, str(exc), command.id) from None
        return preferences_frame(view, request_id=command.id)

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
