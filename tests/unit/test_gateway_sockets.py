"""The gateway over real loopback sockets. The inbox's owner is a real HTTP server on loopback serving a small
in-memory inbox (`FakeInbox`, the worker's side in miniature) and users' preferences; the feed and the
writers are fakes behind the gateway's own interfaces, the command writer answering each command on the feed
as the owner would, the preferences writer storing each change as the owner's directory would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.app import build_server, create_app
from gateway.auth import issue_token
from gateway.connections import ConnectionRegistry
from gateway.feed import FeedRecord, FeedSink
from gateway.inbox_service import InboxService
from kernel.errors import ConfigurationError, InboxUnavailable, PreferencesUnavailable
from kernel.readiness import Readiness
from kernel.settings import GATEWAY_FRAME_OVERHEAD_BYTES, Settings
from schemas.channels import Channel
from schemas.frames import Item, Page, fit, inbox_body, notification_frame, update_frame
from schemas.inbox import FeedKind, InboxAction, InboxCommand, PageRequest, SessionRequest
from schemas.notifications import InAppNotification
from schemas.preference_center import OfferedCategory, OfferedChannel, PreferencesRequest, PreferencesSnapshot
from schemas.preferences import Preferences, PreferencesUpdate, merge
from schemas.websocket import CloseReason

SECRET = "k" * 64
INTERNAL_SECRET = "i" * 40
TIMEOUT = 5.0


# --- the worker's side, in miniature ----------------------------------------------------------------------
@dataclass
class _Entry:
    notification_id: str
    raw: bytes
    read: bool = False
    archived: bool = False

    def item(self) -> Item:
        return Item(self.notification_id, self.raw, self.read, self.archived)


@dataclass
class FakeInbox:
    """Each user's last `size` notifications and inbox sequence; makes the feed records and the owner's
    replies as the worker does (byte budgets included)."""

    size: int = 100
    reply_bytes: int = 256 * 1024
    entries: dict[str, list[_Entry]] = field(default_factory=dict)  # oldest first
    seqs: dict[str, int] = field(default_factory=dict)

    def unread(self, user_id: str) -> int:
        return sum(1 for e in self.entries.get(user_id, ()) if not e.read and not e.archived)

    def _next(self, user_id: str) -> int:
        self.seqs[user_id] = self.seqs.get(user_id, 0) + 1
        return self.seqs[user_id]

    def add(self, notification: InAppNotification) -> FeedRecord:
        """Keep a notification; the record the owner publishes for it."""
        user_id = notification.recipient
        entries = self.entries.setdefault(user_id, [])
        entries.append(_Entry(notification.notification_id, notification.to_json()))
        del entries[: -self.size]
        frame = notification_frame(entries[-1].raw, unread=self.unread(user_id))
        return FeedRecord(user_id, self._next(user_id), FeedKind.NOTIFICATION, frame)

    def apply(self, command: InboxCommand) -> FeedRecord:
        """Apply a command; the update (or, when nothing changed, the answer) that answers it."""
        user_id = command.user_id
        entries = self.entries.get(user_id, [])
        action = command.action
        if action is InboxAction.MARK_ALL_READ:
            targets = entries
        else:
            targets = [e for e in entries if e.notification_id in command.ids]
        changed = []
        for entry in targets:
            before = (entry.read, entry.archived)
            if action in (InboxAction.MARK_READ, InboxAction.MARK_ALL_READ):
                entry.read = True
            elif action is InboxAction.MARK_UNREAD:
                entry.read = False
            else:
                entry.archived = action is InboxAction.ARCHIVE
            if (entry.read, entry.archived) != before:
                changed.append(entry.item())
        unread = self.unread(user_id)
        if not changed:
            frame = update_frame([], unread=unread)
            return FeedRecord(user_id, self.seqs.get(user_id, 0), FeedKind.ANSWER, frame, command.command_id)
        frame = update_frame(changed, unread=unread)
        return FeedRecord(user_id, self._next(user_id), FeedKind.UPDATE, frame, command.command_id)

    def session(self, request: SessionRequest) -> dict[str, Any]:
        user_id = request.user_id
        entries = self.entries.get(user_id, [])
        unread = self.unread(user_id)
        reply: dict[str, Any] = {"seq": self.seqs.get(user_id, 0), "unread": unread}
        if request.since is None:
            return reply
        ids = [e.notification_id for e in entries]
        if request.since not in ids:
            return {**reply, "recovered": False}
        missed = [
            notification_frame(e.raw, unread=unread, read=e.read)
            for e in entries[ids.index(request.since) + 1 :]
        ]
        if (
            len(missed) > request.max_frames
            or sum(map(len, missed)) > self.reply_bytes - GATEWAY_FRAME_OVERHEAD_BYTES
        ):
            return {**reply, "recovered": False}
        return {**reply, "recovered": True, "missed": [orjson.loads(frame) for frame in missed]}

    def page(self, request: PageRequest) -> dict[str, Any]:
        selected: list[Item] = []
        started = request.before is None
        next_before = None
        for entry in reversed(self.entries.get(request.user_id, [])):
            if not started:
                started = entry.notification_id == request.before
                continue
            if entry.archived != request.archived:
                continue
            if len(selected) == request.limit:
                next_before = selected[-1].notification_id
                break
            selected.append(entry.item())
        page = fit(Page(selected, next_before), self.reply_bytes - GATEWAY_FRAME_OVERHEAD_BYTES)
        return {
            **inbox_body(page, unread=self.unread(request.user_id)),
            "seq": self.seqs.get(request.user_id, 0),
        }


def _offered(category: str, locked: bool, *channels: Channel) -> OfferedCategory:
    offered = [OfferedChannel(channel=channel, locked=locked) for channel in channels]
    return OfferedCategory(category=category, locked=locked, channels=offered)


# What the fake owner's rules offer: orders in-app and by email, security (critical) by email and SMS.
OFFERED = [
    _offered("orders", False, Channel.INAPP, Channel.EMAIL),
    _offered("security", True, Channel.EMAIL, Channel.SMS),
]


class OwnerServer:
    """The workers' internal endpoint: checks the bearer secret, records what it was asked, and can be down
    (503) or hold its replies (`gate`) after taking its snapshot. Preferences are `stored` per user, offered
    as `offered`."""

    def __init__(self, inbox: FakeInbox, secret: str = INTERNAL_SECRET) -> None:
        self.inbox = inbox
        self._secret = secret
        self.authorizations: list[str | None] = []
        self.requests: list[SessionRequest | PageRequest | PreferencesRequest] = []
        self.offered = list(OFFERED)
        self.stored: dict[str, Preferences] = {}
        self.down = False
        self.gate: asyncio.Event | None = None
        self.waiting = 0
        # A misbehaving owner: more missed frames than asked for.
        self.ignore_max_frames = False

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/internal/inbox/session", self._session, methods=["POST"]),
                Route("/internal/inbox/page", self._page, methods=["POST"]),
                Route("/internal/preferences", self._preferences, methods=["POST"]),
            ]
        )

    async def _session(self, request: Request) -> Response:
        return await self._answer(request, SessionRequest)

    async def _page(self, request: Request) -> Response:
        return await self._answer(request, PageRequest)

    async def _preferences(self, request: Request) -> Response:
        return await self._answer(request, PreferencesRequest)

    async def _answer(
        self, request: Request, model: type[SessionRequest] | type[PageRequest] | type[PreferencesRequest]
    ) -> Response:
        authorization = request.headers.get("authorization")
        self.authorizations.append(authorization)
        if authorization != f"Bearer {self._secret}":
            return Response(b'{"error":"unauthorized"}', 401, media_type="application/json")
        if self.down:
            return Response(b'{"error":"not_ready"}', 503, media_type="application/json")
        try:
            asked = model.model_validate_json(await request.body())
        except ValidationError:
            return Response(b'{"error":"invalid_request"}', 400, media_type="application/json")
        self.requests.append(asked)
        if isinstance(asked, SessionRequest):
            if self.ignore_max_frames:
                asked = asked.model_copy(update={"max_frames": 100_000})
            reply = self.inbox.session(asked)
        elif isinstance(asked, PreferencesRequest):
            stored = self.stored.get(asked.user_id, Preferences(user_id=asked.user_id))
            reply = PreferencesSnapshot(categories=self.offered, preferences=stored).model_dump(mode="json")
        else:
            reply = self.inbox.page(asked)
        if self.gate is not None:  # the snapshot is taken; the reply waits
            self.waiting += 1
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1
        return Response(orjson.dumps(reply), media_type="application/json")


class FakeFeed:
    """Stands in for Kafka: hands the records a test pushes to the gateway's sink."""

    def __init__(self, *, positioned: bool = True) -> None:
        self.readiness = Readiness(True, "fake feed")
        self.sink: FeedSink | None = None
        self.stopped = False
        self._positioned = positioned

    async def run(self, sink: FeedSink) -> None:
        self.sink = sink
        if self._positioned:
            sink.positioned()
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped = True

    def push(self, *records: FeedRecord) -> None:
        assert self.sink is not None, "the lifespan did not start the feed"
        self.sink.feed(list(records))

    def lose(self) -> None:
        assert self.sink is not None
        self.sink.lost()

    def reposition(self) -> None:
        assert self.sink is not None
        self.sink.positioned()


class RecordingWriter:
    """Stands in for the commands topic: records each command, or refuses while `down`; with an inbox and a
    feed, answers it on the feed as the owner would (unless `silent`)."""

    def __init__(self, inbox: FakeInbox | None = None, feed: FakeFeed | None = None) -> None:
        self.written: list[InboxCommand] = []
        self.down = False
        self.silent = False
        self._inbox = inbox
        self._feed = feed

    async def write(self, command: InboxCommand) -> None:
        if self.down:
            raise InboxUnavailable("broker down")
        self.written.append(command)
        if self._inbox is not None and self._feed is not None and not self.silent:
            # Answered later, as a record read from the feed.
            asyncio.get_running_loop().call_soon(self._feed.push, self._inbox.apply(command))


class RecordingPreferencesWriter:
    """Stands in for the preferences topic: records each update, or refuses while `down`; with an owner,
    stores it there as the worker's directory would apply it."""

    def __init__(self, owner: OwnerServer | None = None) -> None:
        self.written: list[PreferencesUpdate] = []
        self.down = False
        self._owner = owner

    async def write(self, update: PreferencesUpdate) -> None:
        if self.down:
            raise PreferencesUnavailable("broker down")
        self.written.append(update)
        if self._owner is not None:
            self._owner.stored[update.user_id] = merge(self._owner.stored.get(update.user_id), update)


@dataclass
class Owner:
    server: OwnerServer
    uvicorn: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.uvicorn.should_exit = True
        await asyncio.wait_for(self.task, TIMEOUT)


def _bound_socket() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    return sock, port


async def start_owner(inbox: FakeInbox, secret: str = INTERNAL_SECRET) -> Owner:
    """The owner endpoint on a free loopback port (a bound socket handed to uvicorn, so no port race)."""
    sock, port = _bound_socket()
    server = OwnerServer(inbox, secret)
    config = uvicorn.Config(server.app(), log_config=None, access_log=False, lifespan="off")
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve(sockets=[sock]))
    await _eventually(lambda: running.started)
    return Owner(server, running, task, port)


@contextlib.asynccontextmanager
async def owner_endpoint(inbox: FakeInbox | None = None) -> AsyncIterator[Owner]:
    owner = await start_owner(inbox if inbox is not None else FakeInbox())
    try:
        yield owner
    finally:
        await owner.stop()


# --- the gateway ------------------------------------------------------------------------------------------
@dataclass
class Gateway:
    app: Starlette
    feed: FakeFeed
    writer: RecordingWriter
    inbox: FakeInbox
    owner: OwnerServer
    metrics: CollectorRegistry
    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]
    preferences: RecordingPreferencesWriter

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, TIMEOUT)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def connections(self) -> ConnectionRegistry:
        registry: ConnectionRegistry = self.app.state.connections
        return registry

    @property
    def service(self) -> InboxService:
        service: InboxService = self.app.state.service
        return service

    def deliver(self, notification: InAppNotification) -> FeedRecord:
        """A notification kept by the owner and published on the feed."""
        record = self.inbox.add(notification)
        self.feed.push(record)
        return record

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.get_sample_value(name, labels)


GatewayFactory = Callable[..., Awaitable[Gateway]]


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"jwt_secret": SECRET, "internal_secret": INTERNAL_SECRET, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def start_gateway() -> AsyncIterator[GatewayFactory]:
    """Starts gateways, each with its own owner endpoint, on free loopback ports."""
    running: list[Gateway] = []
    owners: list[Owner] = []

    async def start(feed: FakeFeed | None = None, **overrides: Any) -> Gateway:
        defaults = _settings()
        inbox = FakeInbox(
            size=overrides.pop("inbox_size", defaults.inbox_size),
            reply_bytes=overrides.get("gateway_list_reply_bytes", defaults.gateway_list_reply_bytes),
        )
        owner = await start_owner(inbox)
        owners.append(owner)
        sock, port = _bound_socket()
        settings = _settings(**{"gateway_port": port, "gateway_worker_url": owner.url, **overrides})
        feed = feed or FakeFeed()
        writer, metrics = RecordingWriter(inbox, feed), CollectorRegistry()
        preferences = RecordingPreferencesWriter(owner.server)
        app = create_app(settings, registry=metrics, feed=feed, writer=writer, preferences_writer=preferences)
        server = build_server(app, settings)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        gateway = Gateway(app, feed, writer, inbox, owner.server, metrics, port, server, task, preferences)
        running.append(gateway)
        await _eventually(lambda: server.started)
        return gateway

    yield start
    for gateway in running:
        if not gateway.task.done():
            await gateway.stop()
    for owner in owners:
        await owner.stop()


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> Gateway:
    return await start_gateway()


def _token(user_id: str, ttl: int = 60) -> str:
    return issue_token(SECRET, user_id, ttl)


def _connect(gateway: Gateway, user_id: str, *, query: str = "", **options: Any) -> connect:
    headers = {"Authorization": f"Bearer {_token(user_id)}", **options.pop("headers", {})}
    return connect(gateway.url + query, additional_headers=headers, **options)


async def _send(ws: ClientConnection, **frame: Any) -> dict[str, Any]:
    """Send a command and return the next frame that is not a push."""
    await ws.send(json.dumps({"v": 1, **frame}))
    while True:
        reply = await _frame(ws)
        if reply["type"] not in ("notification", "inbox_update"):
            return reply


async def _frame(ws: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(raw, str), "the gateway sends JSON text frames"
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def _closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    return ws.close_code, ws.close_reason


async def _http_get(port: int, path: str) -> tuple[int, str]:
    return await _http(port, "GET", path)


async def _http(
    port: int, method: str, path: str, *, token: str | None = None, body: bytes = b""
) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    response = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def _eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


def _notification(
    recipient: str, title: str = "Hello", body: str = "Your order is on its way."
) -> InAppNotification:
    now = datetime.now(UTC)
    return InAppNotification(
        notification_id=f"ntf_{recipient}_{title}",
        event_id="evt_1",
        event_type="order.shipped",
        recipient=recipient,
        occurred_at=now,
        created_at=now,
        title=title,
        body=body,
        action_url="https://example.test/orders/1",
        data={"order_id": 1},
    )


def _welcome(frame: dict[str, Any], user_id: str, unread: int = 0) -> None:
    assert (frame["type"], frame["v"], frame["user_id"], frame["unread"]) == ("welcome", 1, user_id, unread)
    assert frame["expires_at"] > 0


def _closed_port() -> int:
    sock, port = _bound_socket()
    sock.close()
    return port


# --- handshake and auth -----------------------------------------------------------------------------------
async def test_a_valid_header_token_gets_a_welcome(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        _welcome(await _frame(ws), "alice")
        assert gateway.sample("herald_gateway_connections_open") == 1


async def test_compression_is_accepted_only_when_configured(start_gateway: GatewayFactory) -> None:
    # The client offers permessage-deflate, as browsers do; it costs the gateway memory per socket and CPU per
    # frame, so it is taken only when HERALD_GATEWAY_WS_COMPRESSION asks for it.
    for enabled in (False, True):
        gateway = await start_gateway(gateway_ws_compression=enabled)
        async with _connect(gateway, "alice", compression="deflate") as ws:
            _welcome(await _frame(ws), "alice")
            assert ws.response is not None
            negotiated = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            assert ("permessage-deflate" in negotiated) is enabled


async def test_a_valid_query_token_gets_a_welcome(gateway: Gateway) -> None:
    async with connect(f"{gateway.url}?token={_token('alice')}") as ws:
        assert (await _frame(ws))["user_id"] == "alice"


@pytest.mark.parametrize(
    ("query", "code", "reason", "metric"),
    [
        ("", 4001, "missing_token", "missing_token"),
        ("?token=not-a-jwt", 4002, "invalid_token", "malformed_token"),
        (f"?token={issue_token('x' * 64, 'alice', 3600)}", 4002, "invalid_token", "bad_signature"),
        (
            f"?token={issue_token(SECRET, 'alice', 3600, algorithm='HS512')}",
            4002,
            "invalid_token",
            "algorithm_not_allowed",
        ),
        (f"?token={issue_token(SECRET, 'two words', 3600)}", 4002, "invalid_token", "invalid_claims"),
        (f"?token={issue_token(SECRET, 'alice', -10)}", 4003, "expired_token", "expired_token"),
    ],
)
async def test_bad_tokens_are_closed_with_their_code_before_any_data(
    gateway: Gateway, query: str, code: int, reason: str, metric: str
) -> None:
    async with connect(gateway.url + query) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert await _closed_with(ws) == (code, reason)
    assert gateway.sample("herald_gateway_auth_failures_total", reason=metric) == 1
    assert gateway.sample("herald_gateway_connections_open") == 0
    assert gateway.owner.requests == []  # the owner is asked nothing for a refused socket


async def test_origins_off_the_allow_list_are_refused(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(gateway_allowed_origins="https://app.example.com")
    refused = [
        "https://evil.example.net",
        "http://app.example.com",  # the listed host, another scheme
        "https://app.example.com:8443",  # another port
        f"http://127.0.0.1:{gateway.port}",  # the Host header's: not a listed origin
        "null",
    ]
    for origin in refused:
        async with _connect(gateway, "alice", headers={"Origin": origin}) as ws:
            assert await _closed_with(ws) == (4004, "origin_not_allowed"), origin
    assert gateway.sample("herald_gateway_auth_failures_total", reason="origin_not_allowed") == len(refused)
    for origin in ("https://app.example.com", "https://APP.example.com:443"):  # listed, written either way
        async with _connect(gateway, "alice", headers={"Origin": origin}) as ws:
            _welcome(await _frame(ws), "alice")


async def test_with_no_origin_listed_only_the_gateways_own_pages_may_connect(gateway: Gateway) -> None:
    own = f"http://127.0.0.1:{gateway.port}"  # the demo page's origin: same scheme, host and port
    async with _connect(gateway, "alice", headers={"Origin": own}) as ws:
        _welcome(await _frame(ws), "alice")
    for origin in (
        f"https://127.0.0.1:{gateway.port}",
        f"http://127.0.0.1:{gateway.port + 1}",
        "http://127.0.0.1",
    ):
        async with _connect(gateway, "alice", headers={"Origin": origin}) as ws:
            assert await _closed_with(ws) == (4004, "origin_not_allowed"), origin


async def test_a_connection_is_closed_when_its_token_expires_unless_refreshed(gateway: Gateway) -> None:
    short = connect(gateway.url, additional_headers={"Authorization": f"Bearer {_token('alice', ttl=1)}"})
    async with short as ws, _connect(gateway, "alice") as refreshed:
        await _frame(ws)
        await _frame(refreshed)
        reply = await _send(refreshed, type="refresh", id="r1", token=_token("alice", ttl=120))
        assert (reply["type"], reply["id"]) == ("refreshed", "r1")
        assert reply["expires_at"] > time.time() + 100
        assert await _closed_with(ws) == (4003, "expired_token")
        assert (await _send(refreshed, type="ping"))["type"] == "pong"
    assert gateway.sample("herald_gateway_connections_closed_total", reason="expired_token") == 1


async def test_a_refresh_with_a_bad_or_foreign_token_is_an_error_and_changes_nothing(
    gateway: Gateway,
) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        for token, message in ((_token("bob"), "the token is for another user"), ("junk", "invalid_token")):
            reply = await _send(ws, type="refresh", token=token)
            assert (reply["type"], reply["code"], reply["message"]) == ("error", "invalid_token", message)
        assert (await _send(ws, type="ping"))["type"] == "pong"


async def test_connections_per_user_are_limited(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(gateway_max_connections_per_user=2)
    async with _connect(gateway, "alice") as a1, _connect(gateway, "alice") as a2:
        await _frame(a1)
        await _frame(a2)
        async with _connect(gateway, "alice") as a3:
            assert await _closed_with(a3) == (4005, "too_many_connections")
        async with _connect(gateway, "bob") as b:
            _welcome(await _frame(b), "bob")
    assert gateway.sample("herald_gateway_connections_refused_total", reason="too_many_connections") == 1


async def test_an_instance_whose_feed_is_not_positioned_refuses_with_1013(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(feed=FakeFeed(positioned=False))
    async with _connect(gateway, "alice") as ws:
        assert await _closed_with(ws) == (1013, "not_ready")
    token = _token("alice")
    assert (await _http(gateway.port, "POST", "/inbox/mark_all_read", token=token))[0] == 503
    # Reads do not need the feed.
    assert (await _http(gateway.port, "GET", "/inbox", token=token))[0] == 200


def _percent_encoded(text: str) -> str:
    return "".join(f"%{ord(c):02X}" for c in text)


@pytest.mark.parametrize(
    ("query", "accepted"),
    [
        ("?token={t}", True),
        ("?%74oken={t}", True),  # the parameter's name percent-encoded: the gateway decodes it
        ("?tok%65n={t}", True),
        ("?since=x&%54%4F%4B%45%4E={t}", False),  # upper case: not the parameter, but still a token
        ("?token={encoded}", True),  # the value percent-encoded
        ("?token%3D{t}", False),  # refused as missing, but the token is in the URL all the same
        ("?%2574oken={t}", False),  # encoded twice: not the parameter once decoded, still a token
    ],
    ids=["plain", "name-encoded-1", "name-encoded-2", "upper", "value-encoded", "equals-encoded", "twice"],
)
async def test_query_tokens_never_reach_the_logs_in_any_encoding(
    gateway: Gateway, query: str, accepted: bool
) -> None:
    token = _token("alice")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    raw = query.format(t=token, encoded=_percent_encoded(token))
    try:
        async with connect(gateway.url + raw) as ws:
            if accepted:
                assert (await _frame(ws))["user_id"] == "alice"
            else:
                assert (await _closed_with(ws))[0] == 4001
    finally:
        logger.removeHandler(handler)
    assert any("/ws" in line for line in lines), lines
    signature = token.split(".")[-1]
    decoded = [unquote(unquote(line)) for line in lines]
    assert not any(signature in line for line in lines + decoded), lines


# --- the owner endpoint -----------------------------------------------------------------------------------
async def test_the_owner_is_asked_with_the_internal_secret_as_a_bearer_and_it_is_never_logged(
    gateway: Gateway,
) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign, assignment]
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        gateway.deliver(_notification("alice"))
        async with _connect(gateway, "alice", query="?since=ntf_unknown") as ws:
            await _frame(ws)
            await _send(ws, type="list")
        gateway.owner.down = True  # refusals and failures are logged too
        async with _connect(gateway, "alice") as ws:
            await _closed_with(ws)
        assert (await _http(gateway.port, "GET", "/inbox/unread", token=_token("alice")))[0] == 503
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    assert gateway.owner.authorizations
    assert set(gateway.owner.authorizations) == {f"Bearer {INTERNAL_SECRET}"}
    formatter = logging.Formatter()
    logged = "\n".join(formatter.format(record) for record in records)
    assert INTERNAL_SECRET not in logged
    # Nor the user, outside the test's own client's lines.
    served = [record for record in records if not record.name.startswith("websockets.client")]
    assert served and "alice" not in "\n".join(formatter.format(record) for record in served)


async def test_an_owner_that_refuses_the_secret_makes_the_gateway_unavailable(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway()
    async with owner_endpoint(gateway.inbox) as other:
        other.server._secret = "another secret that is long enough to be one"
        gateway_with_the_wrong_secret = await start_gateway(gateway_worker_url=other.url)
        async with _connect(gateway_with_the_wrong_secret, "alice") as ws:
            assert await _closed_with(ws) == (1013, "not_ready")
        assert other.server.authorizations == [f"Bearer {INTERNAL_SECRET}"]


@pytest.mark.parametrize("how", ["down", "unreachable"])
async def test_an_owner_that_does_not_answer_refuses_sockets_with_1013_and_http_with_503(
    start_gateway: GatewayFactory, how: str
) -> None:
    if how == "down":
        gateway = await start_gateway()
        gateway.owner.down = True  # 503 not_ready: rebalancing or recovering
    else:
        gateway = await start_gateway(gateway_worker_url=f"http://127.0.0.1:{_closed_port()}")
    async with _connect(gateway, "alice") as ws:
        assert await _closed_with(ws) == (1013, "not_ready")
    assert gateway.sample("herald_gateway_connections_refused_total", reason="not_ready") == 1
    assert gateway.sample("herald_gateway_connections_open") == 0
    token = _token("alice")
    for path in ("/inbox", "/inbox/unread"):
        status, body = await _http(gateway.port, "GET", path, token=token)
        assert (status, json.loads(body)) == (503, {"error": "unavailable"})


async def test_an_owner_slower_than_the_timeout_refuses_the_socket(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(gateway_owner_timeout_seconds=0.3)
    gateway.owner.gate = asyncio.Event()  # never set
    async with _connect(gateway, "alice") as ws:
        assert await _closed_with(ws) == (1013, "not_ready")
    gateway.owner.gate.set()


# --- delivery ---------------------------------------------------------------------------------------------
async def test_a_notification_reaches_every_socket_of_its_recipient_only(gateway: Gateway) -> None:
    async with (
        _connect(gateway, "alice") as a1,
        _connect(gateway, "alice") as a2,
        _connect(gateway, "bob") as b,
    ):
        for ws in (a1, a2, b):
            assert (await _frame(ws))["type"] == "welcome"

        notification = _notification("alice")
        gateway.deliver(notification)

        for ws in (a1, a2):
            frame = await _frame(ws)
            assert (frame["type"], frame["v"], frame["unread"], frame["read"]) == (
                "notification",
                1,
                1,
                False,
            )
            assert InAppNotification.model_validate_json(json.dumps(frame["notification"])) == notification
        # Frames are written in order, so a pong right after his ping proves nothing was queued for Bob.
        assert await _send(b, type="ping") == {"type": "pong", "v": 1}
        assert gateway.sample("herald_gateway_messages_pushed_total") == 2


async def test_a_feed_record_read_twice_is_pushed_once(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        record = gateway.deliver(_notification("alice"))
        gateway.feed.push(record)  # the same record again (the same sequence)
        assert (await _frame(ws))["type"] == "notification"
        assert (await _send(ws, type="ping"))["type"] == "pong"
        assert (await _send(ws, type="list"))["unread"] == 1


async def test_records_that_arrive_while_the_session_is_asked_for_come_once_after_the_recovered_ones(
    gateway: Gateway,
) -> None:
    seen = _notification("alice", title="seen")
    gateway.deliver(seen)
    # Kept by the owner, their records not read from the feed yet.
    missed = [gateway.inbox.add(_notification("alice", title=f"missed{n}")) for n in range(2)]
    gateway.owner.gate = asyncio.Event()
    async with _connect(gateway, "alice", query=f"?since={seen.notification_id}") as ws:
        await _eventually(lambda: gateway.owner.waiting == 1)  # the snapshot is taken, its reply held
        late = [gateway.inbox.add(_notification("alice", title=f"late{n}")) for n in range(2)]
        # The snapshot covers the missed ones (at or below its sequence); the late ones come after it, one of
        # them read twice.
        gateway.feed.push(*missed, late[0], late[0], late[1])
        gateway.owner.gate.set()
        welcome = await _frame(ws)
        assert (welcome["recovered"], welcome["missed"], welcome["unread"]) == (True, 2, 3)
        titles = [(await _frame(ws))["notification"]["title"] for _ in range(4)]
        assert titles == ["missed0", "missed1", "late0", "late1"]
        gateway.feed.push(late[1])
        assert (await _send(ws, type="ping"))["type"] == "pong"
    assert gateway.sample("herald_gateway_messages_pushed_total") == 4


async def test_a_client_whose_queue_overflows_is_closed_as_slow(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(gateway_send_queue_size=2)
    async with _connect(gateway, "alice") as first, _connect(gateway, "alice") as second:
        await _frame(first)
        await _frame(second)
        # Delivered in one go, the senders cannot drain in between: the third frame overflows both queues.
        gateway.feed.push(*(gateway.inbox.add(_notification("alice", title=f"n{n}")) for n in range(3)))
        for ws in (first, second):
            assert await _closed_with(ws) == (CloseReason.SLOW_CLIENT.code, "slow_client")
        assert gateway.sample("herald_gateway_slow_client_disconnects_total") == 2
        assert len(gateway.connections) == 0

    # Within the queue's bound, a burst is delivered in order.
    async with _connect(gateway, "bob") as bob:
        await _frame(bob)
        gateway.feed.push(*(gateway.inbox.add(_notification("bob", title=f"n{n}")) for n in range(2)))
        assert [(await _frame(bob))["notification"]["title"] for _ in range(2)] == ["n0", "n1"]
    await _eventually(lambda: len(gateway.connections) == 0)


async def test_a_socket_whose_held_records_overflow_while_starting_is_closed_as_slow(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(gateway_send_queue_size=2)
    gateway.owner.gate = asyncio.Event()
    async with _connect(gateway, "alice") as ws:
        await _eventually(lambda: gateway.owner.waiting == 1)
        gateway.feed.push(*(gateway.inbox.add(_notification("alice", title=f"n{n}")) for n in range(3)))
        assert await _closed_with(ws) == (CloseReason.SLOW_CLIENT.code, "slow_client")
        gateway.owner.gate.set()
    await _eventually(lambda: len(gateway.connections) == 0)


async def test_a_stalled_client_is_closed_while_a_healthy_one_keeps_receiving(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(gateway_send_queue_size=8)
    big = "x" * 60_000
    # The stalled client completes the handshake, then never reads again: the kernel's buffers fill, then
    # the gateway's write buffer, then its queue for that client.
    stalled = await _stalled_client(gateway, "alice")
    async with _connect(gateway, "alice") as healthy:
        await _frame(healthy)
        await _eventually(lambda: len(gateway.connections) == 2)
        n = 0
        while gateway.sample("herald_gateway_slow_client_disconnects_total") == 0:
            assert n < 1000, "the stalled client was never disconnected"
            gateway.deliver(_notification("alice", title=f"n{n}", body=big))
            frame = await _frame(healthy)
            assert frame["notification"]["title"] == f"n{n}"
            n += 1
        assert len(gateway.connections) == 1
        gateway.deliver(_notification("alice", title="after"))
        assert (await _frame(healthy))["notification"]["title"] == "after"
    stalled.close()


async def _stalled_client(gateway: Gateway, user_id: str) -> socket.socket:
    """A raw socket that performs the WebSocket handshake and then reads nothing more."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", gateway.port))
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {_token(user_id)}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += await asyncio.wait_for(loop.sock_recv(sock, 1), TIMEOUT)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def test_closed_sockets_leave_the_registry(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        assert len(gateway.connections) == 1
    await _eventually(lambda: len(gateway.connections) == 0)
    assert gateway.sample("herald_gateway_connections_open") == 0


async def test_an_idle_connection_is_closed(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(gateway_idle_timeout_seconds=0.3)
    async with _connect(gateway, "alice") as idle:
        await _frame(idle)
        assert await _closed_with(idle) == (4006, "idle_timeout")


async def test_when_the_feed_is_interrupted_sockets_are_closed_to_reconnect_with_since(
    gateway: Gateway,
) -> None:
    seen = _notification("alice", title="seen")
    async with _connect(gateway, "alice") as alice, _connect(gateway, "bob") as bob:
        await _frame(alice)
        await _frame(bob)
        gateway.deliver(seen)
        assert (await _frame(alice))["type"] == "notification"
        gateway.feed.lose()
        for ws in (alice, bob):
            assert await _closed_with(ws) == (1001, "going_away")
    assert gateway.sample("herald_gateway_connections_closed_total", reason="going_away") == 2
    async with _connect(gateway, "alice") as ws:
        assert await _closed_with(ws) == (1013, "not_ready")
    gateway.inbox.add(_notification("alice", title="missed"))  # published while the feed was not read
    gateway.feed.reposition()
    async with _connect(gateway, "alice", query=f"?since={seen.notification_id}") as ws:
        assert ((await _frame(ws))["recovered"], (await _frame(ws))["notification"]["title"]) == (
            True,
            "missed",
        )


# --- inbox ------------------------------------------------------------------------------------------------
async def test_list_pages_newest_first_with_the_unread_count(gateway: Gateway) -> None:
    for n in range(5):
        gateway.deliver(_notification("alice", title=f"n{n}"))
    async with _connect(gateway, "alice") as ws:
        _welcome(await _frame(ws), "alice", unread=5)
        page = await _send(ws, type="list", id="p1", limit=2)
        assert [i["notification"]["title"] for i in page["items"]] == ["n4", "n3"]
        assert (page["id"], page["unread"], page["items"][0]["read"]) == ("p1", 5, False)
        assert "seq" not in page
        rest = await _send(ws, type="list", limit=10, before=page["next_before"])
        assert [i["notification"]["title"] for i in rest["items"]] == ["n2", "n1", "n0"]
        assert rest["next_before"] is None
    assert [
        (r.limit, r.before, r.archived) for r in gateway.owner.requests if isinstance(r, PageRequest)
    ] == [
        (2, None, False),
        (10, "ntf_alice_n3", False),
    ]


async def test_a_change_is_acknowledged_with_the_unread_count_of_the_owners_answer(gateway: Gateway) -> None:
    first, second = _notification("alice", title="a"), _notification("alice", title="b")
    gateway.deliver(first)
    gateway.deliver(second)
    async with (
        _connect(gateway, "alice") as phone,
        _connect(gateway, "alice") as laptop,
        _connect(gateway, "bob") as bob,
    ):
        for ws in (phone, laptop, bob):
            await _frame(ws)
        await phone.send(
            json.dumps({"type": "mark_read", "v": 1, "id": "m1", "ids": [first.notification_id] * 2})
        )
        update = {
            "type": "inbox_update",
            "v": 1,
            "items": [{"notification_id": first.notification_id, "read": True, "archived": False}],
            "unread": 1,
        }
        # The update reaches the socket that asked too, before the ack.
        assert [await _frame(phone), await _frame(phone)] == [
            update,
            {"type": "ack", "v": 1, "id": "m1", "unread": 1},
        ]
        assert await _frame(laptop) == update
        [command] = gateway.writer.written
        assert (command.user_id, command.action, command.ids) == (
            "alice",
            InboxAction.MARK_READ,
            [first.notification_id],
        )
        assert command.command_id and command.at > 0
        assert (await _send(bob, type="ping"))["type"] == "pong"

        assert (await _send(laptop, type="mark_all_read"))["unread"] == 0
        assert (await _frame(phone))["items"] == [
            {"notification_id": second.notification_id, "read": True, "archived": False}
        ]
        assert (await _send(phone, type="mark_unread", ids=[first.notification_id]))["unread"] == 1
        assert (await _send(phone, type="archive", ids=[first.notification_id]))["unread"] == 0
        archived = await _send(phone, type="list", archived=True)
        assert [i["notification"]["notification_id"] for i in archived["items"]] == [first.notification_id]
        active = await _send(phone, type="list")
        assert [i["notification"]["notification_id"] for i in active["items"]] == [second.notification_id]
        assert [c.action for c in gateway.writer.written] == [
            "mark_read",
            "mark_all_read",
            "mark_unread",
            "archive",
        ]


async def test_a_change_that_changes_nothing_is_answered_but_not_pushed(gateway: Gateway) -> None:
    gateway.deliver(_notification("alice"))
    async with _connect(gateway, "alice") as phone, _connect(gateway, "alice") as laptop:
        await _frame(phone)
        await _frame(laptop)
        await phone.send(json.dumps({"type": "mark_read", "v": 1, "id": "m", "ids": ["ntf_unknown"]}))
        assert await _frame(phone) == {"type": "ack", "v": 1, "id": "m", "unread": 1}
        assert (await _send(laptop, type="ping"))["type"] == "pong"
    assert gateway.sample("herald_gateway_inbox_changes_total") == 1


async def test_a_change_without_an_answer_in_time_is_unavailable(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(gateway_owner_timeout_seconds=0.3)
    notification = _notification("alice")
    gateway.deliver(notification)
    gateway.writer.silent = True
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        reply = await _send(ws, type="mark_read", id="m", ids=[notification.notification_id])
        assert (reply["type"], reply["id"], reply["code"]) == ("error", "m", "unavailable")
        ids = json.dumps({"ids": [notification.notification_id]}).encode()
        status, body = await _http(gateway.port, "POST", "/inbox/mark_read", token=_token("alice"), body=ids)
        assert (status, json.loads(body)) == (503, {"error": "unavailable"})
    assert gateway.sample("herald_gateway_inbox_changes_total") == 0


async def test_an_answer_without_an_unread_count_is_an_invalid_record_and_unavailable(
    gateway: Gateway,
) -> None:
    gateway.writer.silent = True
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        await ws.send(json.dumps({"type": "mark_all_read", "v": 1, "id": "m"}))
        await _eventually(lambda: bool(gateway.writer.written))
        command_id = gateway.writer.written[0].command_id
        gateway.feed.push(FeedRecord("alice", 0, FeedKind.ANSWER, b'{"type":"inbox_update"}', command_id))
        reply = await _frame(ws)
        assert (reply["type"], reply["id"], reply["code"]) == ("error", "m", "unavailable")
    assert gateway.sample("herald_gateway_invalid_records_total") == 1


async def test_a_change_the_broker_refuses_is_an_error(gateway: Gateway) -> None:
    notification = _notification("alice")
    gateway.deliver(notification)
    gateway.writer.down = True
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        reply = await _send(ws, type="mark_read", ids=[notification.notification_id])
        assert (reply["type"], reply["code"]) == ("error", "unavailable")
        assert (await _send(ws, type="list"))["unread"] == 1


async def test_a_list_the_owner_cannot_answer_is_an_error_and_the_socket_stays_open(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        gateway.owner.down = True
        reply = await _send(ws, type="list", id="l")
        assert (reply["type"], reply["id"], reply["code"]) == ("error", "l", "unavailable")
        assert (await _send(ws, type="ping"))["type"] == "pong"


async def test_the_inbox_over_http_with_the_same_token(gateway: Gateway) -> None:
    notification = _notification("alice")
    gateway.deliver(notification)
    gateway.deliver(_notification("bob"))
    token = _token("alice")
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        status, body = await _http(gateway.port, "GET", "/inbox?limit=5", token=token)
        listed = json.loads(body)
        assert status == 200 and listed["unread"] == 1 and "seq" not in listed
        assert [i["notification"]["recipient"] for i in listed["items"]] == ["alice"]
        assert await _http(gateway.port, "GET", "/inbox/unread", token=token) == (200, '{"unread":1}')
        ids = json.dumps({"ids": [notification.notification_id]}).encode()
        assert await _http(gateway.port, "POST", "/inbox/mark_read", token=token, body=ids) == (
            200,
            '{"unread":0}',
        )
        assert (await _frame(ws))["type"] == "inbox_update"  # the socket hears of the HTTP change
        assert (await _http(gateway.port, "POST", "/inbox/mark_all_read", token=token))[0] == 200
        assert (await _http(gateway.port, "POST", "/inbox/nope", token=token, body=ids))[0] == 404
        assert (await _http(gateway.port, "POST", "/inbox/archive", token=token, body=b"{}"))[0] == 400
        assert (await _http(gateway.port, "GET", "/inbox?limit=0", token=token))[0] == 400
    status, body = await _http(gateway.port, "GET", "/inbox")
    assert (status, json.loads(body)) == (401, {"error": "missing_token"})
    assert (await _http(gateway.port, "GET", "/inbox", token=_token("alice")[:-3] + "abc"))[0] == 401


# --- recovery ---------------------------------------------------------------------------------------------
async def test_a_reconnect_recovers_what_was_missed_in_order_before_live_ones(gateway: Gateway) -> None:
    seen = _notification("alice", title="seen")
    gateway.deliver(seen)
    for n in range(3):
        gateway.deliver(_notification("alice", title=f"missed{n}"))
    async with _connect(gateway, "alice", query=f"?since={seen.notification_id}") as ws:
        welcome = await _frame(ws)
        assert (welcome["recovered"], welcome["missed"], welcome["unread"]) == (True, 3, 4)
        gateway.deliver(_notification("alice", title="live"))
        titles = [(await _frame(ws))["notification"]["title"] for _ in range(4)]
        assert titles == ["missed0", "missed1", "missed2", "live"]
    assert gateway.sample("herald_gateway_recoveries_total", outcome="recovered") == 1
    [session] = [r for r in gateway.owner.requests if isinstance(r, SessionRequest)]
    assert (session.user_id, session.since) == ("alice", seen.notification_id)


async def test_a_reconnect_from_a_point_no_longer_kept_is_told_to_reload(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(inbox_size=2)
    first = _notification("alice", title="first")
    for n in (first, _notification("alice", title="b"), _notification("alice", title="c")):
        gateway.deliver(n)
    async with _connect(gateway, "alice", query=f"?since={first.notification_id}") as ws:
        welcome = await _frame(ws)
        assert (welcome["recovered"], welcome["unread"]) == (False, 2)
        assert "missed" not in welcome
        assert (await _send(ws, type="ping"))["type"] == "pong"  # and nothing was replayed
    assert gateway.sample("herald_gateway_recoveries_total", outcome="failed") == 1


async def test_a_since_no_notification_id_can_be_recovers_nothing(gateway: Gateway) -> None:
    async with _connect(gateway, "alice", query="?since=" + "x" * 300) as ws:
        welcome = await _frame(ws)
        assert (welcome["recovered"], welcome["unread"]) == (False, 0)
    assert gateway.sample("herald_gateway_recoveries_total", outcome="failed") == 1


# --- client frames ----------------------------------------------------------------------------------------
async def test_ping_gets_pong_with_its_id(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        await ws.send('{"type":"ping","v":1,"id":"p"}')
        assert await _frame(ws) == {"type": "pong", "v": 1, "id": "p"}


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        ("not json", "malformed_frame"),
        ("[1, 2]", "malformed_frame"),
        (b"\x00binary", "malformed_frame"),
        ('{"type":"ping"}', "unsupported_version"),
        ('{"type":"ping","v":true}', "unsupported_version"),
        ('{"type":"ping","v":2}', "unsupported_version"),
        ('{"type":"subscribe","v":1}', "unknown_type"),
        ('{"v":1}', "unknown_type"),
        ('{"type":"mark_read","v":1}', "invalid_frame"),
        ('{"type":"mark_read","v":1,"ids":[]}', "invalid_frame"),
        ('{"type":"list","v":1,"limit":"5"}', "invalid_frame"),
        ('{"type":"ping","v":1,"extra":1}', "invalid_frame"),
    ],
)
async def test_a_bad_frame_gets_an_error_frame_and_the_socket_stays_open(
    gateway: Gateway, sent: str | bytes, code: str
) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        await ws.send(sent)
        error = await _frame(ws)
        assert (error["type"], error["v"], error["code"]) == ("error", 1, code)
        assert error["message"]
        await ws.send('{"type":"ping","v":1}')
        assert await _frame(ws) == {"type": "pong", "v": 1}
    assert gateway.writer.written == []


async def test_a_frame_over_the_maximum_size_closes_with_1009(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(gateway_max_frame_bytes=2048)
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        await ws.send(json.dumps({"type": "ping", "v": 1, "id": "x" * 4096}))
        assert (await _closed_with(ws))[0] == 1009


# --- slow clients on plain HTTP ---------------------------------------------------------------------------
async def _kept_open(
    port: int, send: Callable[[asyncio.StreamWriter], Awaitable[None]], within: float
) -> bool:
    """Whether the gateway still holds the connection `within` seconds after `send` started."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sending = asyncio.create_task(send(writer))
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
        return False
    except TimeoutError:
        return True
    except ConnectionError:
        return False
    finally:
        sending.cancel()
        writer.close()


async def _dribble(writer: asyncio.StreamWriter, data: bytes) -> None:
    for n in range(len(data)):
        writer.write(data[n : n + 1])
        await writer.drain()
        await asyncio.sleep(0.1)


async def test_the_next_request_on_a_kept_alive_connection_has_a_header_deadline(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(gateway_handshake_timeout_seconds=0.5)
    slow = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: " + b"x" * 100 + b"\r\n\r\n"

    async def second_request_slowly(writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # answered; kept alive
        await asyncio.sleep(0.3)
        await _dribble(writer, slow)

    assert not await _kept_open(gateway.port, second_request_slowly, within=3)


async def test_a_body_sent_slowly_is_cut_off(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(gateway_body_timeout_seconds=0.5)
    body = json.dumps({"ids": ["ntf_" + "x" * 40] * 3}).encode()

    async def slow_body(writer: asyncio.StreamWriter) -> None:
        writer.write(
            "POST /inbox/mark_read HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {_token('alice')}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        await _dribble(writer, body)

    assert not await _kept_open(gateway.port, slow_body, within=3)
    assert gateway.writer.written == []


async def test_a_body_over_the_frame_limit_is_not_read(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(gateway_max_frame_bytes=2048, gateway_body_timeout_seconds=0.5)

    async def huge_body(writer: asyncio.StreamWriter) -> None:
        writer.write(
            "POST /inbox/mark_read HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {_token('alice')}\r\nContent-Length: {1 << 30}\r\n\r\n".encode()
        )
        while True:
            writer.write(b"x" * 65536)
            await writer.drain()

    assert not await _kept_open(gateway.port, huge_body, within=3)


# --- HTTP endpoints and lifecycle -------------------------------------------------------------------------
async def test_healthz_answers(gateway: Gateway) -> None:
    assert await _http_get(gateway.port, "/healthz") == (200, "ok")


async def test_the_demo_page_is_served(gateway: Gateway) -> None:
    status, body = await _http_get(gateway.port, "/demo")
    assert status == 200 and "<title>Herald inbox demo</title>" in body


async def test_readyz_follows_the_feed(gateway: Gateway) -> None:
    gateway.feed.readiness = Readiness(False, "waiting for topic herald.inbox.feed")
    assert await _http_get(gateway.port, "/readyz") == (503, "waiting for topic herald.inbox.feed")
    gateway.feed.readiness = Readiness(True, "reading 6 partitions of herald.inbox.feed")
    status, _ = await _http_get(gateway.port, "/readyz")
    assert status == 200


async def test_metrics_are_exposed_without_user_ids(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        gateway.deliver(_notification("alice"))
        await _frame(ws)
        status, body = await _http_get(gateway.port, "/metrics")
    assert status == 200
    for name in (
        "herald_gateway_connections_open 1.0",
        "herald_gateway_messages_pushed_total 1.0",
        'herald_gateway_auth_failures_total{reason="missing_token"} 0.0',
        'herald_gateway_recoveries_total{outcome="failed"} 0.0',
        "herald_gateway_slow_client_disconnects_total 0.0",
        "herald_gateway_invalid_records_total 0.0",
        "herald_gateway_inbox_changes_total 0.0",
        "herald_gateway_preference_changes_total 0.0",
    ):
        assert name in body
    assert "alice" not in body


async def test_shutdown_closes_sockets_with_1001_and_stops_the_feed(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws, _connect(gateway, "bob") as other:
        await _frame(ws)
        await _frame(other)
        assert not gateway.feed.stopped
        await gateway.stop()
        assert await _closed_with(ws) == (1001, "going_away")
        assert await _closed_with(other) == (1001, "going_away")
    assert gateway.feed.stopped


async def test_notification_frames_survive_a_closed_connection(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
    with pytest.raises(ConnectionClosed):
        await ws.recv()
    gateway.deliver(_notification("alice"))  # must not raise, whatever the registry still holds


# --- configuration ----------------------------------------------------------------------------------------
def test_an_unset_secret_fails_naming_the_setting() -> None:
    settings = Settings(_env_file=None, jwt_secret=None, internal_secret=INTERNAL_SECRET)  # type: ignore[call-arg, arg-type]
    with pytest.raises(ConfigurationError, match="HERALD_JWT_SECRET"):
        create_app(settings, feed=FakeFeed(), writer=RecordingWriter())


def test_an_unset_internal_secret_fails_naming_the_setting() -> None:
    settings = Settings(_env_file=None, jwt_secret=SECRET)  # type: ignore[call-arg, arg-type]
    with pytest.raises(ConfigurationError, match="HERALD_INTERNAL_SECRET"):
        create_app(settings, feed=FakeFeed(), writer=RecordingWriter())


def test_a_secret_too_short_for_the_algorithm_fails_naming_the_setting() -> None:
    settings = _settings(jwt_secret="k" * 40, jwt_algorithm="HS512")
    with pytest.raises(ConfigurationError, match="HERALD_JWT_SECRET: must be at least 64 bytes"):
        create_app(settings, feed=FakeFeed(), writer=RecordingWriter())


def test_a_malformed_origin_fails_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="HERALD_GATEWAY_ALLOWED_ORIGINS"):
        create_app(
            _settings(gateway_allowed_origins="app.example.com/x"), feed=FakeFeed(), writer=RecordingWriter()
        )
