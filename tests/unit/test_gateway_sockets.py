"""The gateway over real loopback sockets, with a fake feed and a recording writer in place of Kafka."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.app import build_server, create_app
from gateway.auth import issue_token
from gateway.connections import ConnectionRegistry
from gateway.consumer import FeedSink
from gateway.inbox_service import InboxService
from kernel.errors import ConfigurationError, InboxUnavailable
from kernel.readiness import Readiness
from kernel.settings import Settings
from schemas.inbox import InboxAttribute, InboxStateChange
from schemas.notifications import InAppNotification
from schemas.websocket import CloseReason

SECRET = "k" * 64
TIMEOUT = 5.0


class FakeFeed:
    """Stands in for Kafka: records the sink so a test can hand it notifications and state changes."""

    def __init__(self, *, caught_up: bool = True) -> None:
        self.readiness = Readiness(True, "fake feed")
        self.sink: FeedSink | None = None
        self.stopped = False
        self._caught_up = caught_up

    async def run(self, sink: FeedSink) -> None:
        self.sink = sink
        if self._caught_up:
            sink.caught_up()
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped = True


class RecordingWriter:
    """Stands in for the inbox topic: records what was written, or refuses while `down`."""

    def __init__(self) -> None:
        self.written: list[InboxStateChange] = []
        self.down = False

    async def write(self, changes: Any) -> None:
        if self.down:
            raise InboxUnavailable("broker down")
        self.written.extend(changes)


@dataclass
class Gateway:
    app: Starlette
    feed: FakeFeed
    writer: RecordingWriter
    metrics: CollectorRegistry
    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]

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

    def deliver(self, notification: InAppNotification) -> None:
        assert self.feed.sink is not None, "the lifespan did not start the feed"
        self.feed.sink.notification(notification, notification.to_json())

    def apply(self, change: InboxStateChange) -> None:
        assert self.feed.sink is not None
        self.feed.sink.state(change)

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.get_sample_value(name, labels)


GatewayFactory = Callable[..., Awaitable[Gateway]]


def _settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, jwt_secret=SECRET, **overrides)  # type: ignore[call-arg, arg-type]


@pytest.fixture
async def start_gateway() -> AsyncIterator[GatewayFactory]:
    """Starts gateways on free loopback ports (a bound socket handed to uvicorn, so no port race)."""
    running: list[Gateway] = []

    async def start(feed: FakeFeed | None = None, **overrides: Any) -> Gateway:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = _settings(gateway_port=port, **overrides)
        feed, writer, metrics = feed or FakeFeed(), RecordingWriter(), CollectorRegistry()
        app = create_app(settings, registry=metrics, feed=feed, writer=writer)
        server = build_server(app, settings)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        gateway = Gateway(app, feed, writer, metrics, port, server, task)
        running.append(gateway)
        await _eventually(lambda: server.started)
        return gateway

    yield start
    for gateway in running:
        if not gateway.task.done():
            await gateway.stop()


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


async def test_an_instance_still_reading_its_topics_refuses_with_1013(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(feed=FakeFeed(caught_up=False))
    async with _connect(gateway, "alice") as ws:
        assert await _closed_with(ws) == (1013, "not_ready")
    assert (await _http(gateway.port, "GET", "/inbox", token=_token("alice")))[0] == 503


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


async def test_a_replayed_notification_is_neither_kept_nor_pushed_twice(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        gateway.deliver(_notification("alice"))
        gateway.deliver(_notification("alice"))
        assert (await _frame(ws))["type"] == "notification"
        assert (await _send(ws, type="ping"))["type"] == "pong"
        assert (await _send(ws, type="list"))["unread"] == 1


async def test_a_client_whose_queue_overflows_is_closed_as_slow(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(gateway_send_queue_size=2)
    async with _connect(gateway, "alice") as first, _connect(gateway, "alice") as second:
        await _frame(first)
        await _frame(second)
        # Delivered in one go, the senders cannot drain in between: the third frame overflows both queues.
        for n in range(3):
            gateway.deliver(_notification("alice", title=f"n{n}"))
        for ws in (first, second):
            assert await _closed_with(ws) == (CloseReason.SLOW_CLIENT.code, "slow_client")
        assert gateway.sample("herald_gateway_slow_client_disconnects_total") == 2
        assert len(gateway.connections) == 0

    # Within the queue's bound, a burst is delivered in order.
    async with _connect(gateway, "bob") as bob:
        await _frame(bob)
        gateway.deliver(_notification("bob", title="n0"))
        gateway.deliver(_notification("bob", title="n1"))
        assert [(await _frame(bob))["notification"]["title"] for _ in range(2)] == ["n0", "n1"]
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


# --- inbox ------------------------------------------------------------------------------------------------
async def test_list_pages_newest_first_with_the_unread_count(gateway: Gateway) -> None:
    for n in range(5):
        gateway.deliver(_notification("alice", title=f"n{n}"))
    async with _connect(gateway, "alice") as ws:
        _welcome(await _frame(ws), "alice", unread=5)
        page = await _send(ws, type="list", id="p1", limit=2)
        assert [i["notification"]["title"] for i in page["items"]] == ["n4", "n3"]
        assert (page["id"], page["unread"], page["items"][0]["read"]) == ("p1", 5, False)
        rest = await _send(ws, type="list", limit=10, before=page["next_before"])
        assert [i["notification"]["title"] for i in rest["items"]] == ["n2", "n1", "n0"]
        assert rest["next_before"] is None


async def test_the_inbox_keeps_the_last_n(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(inbox_size=3)
    for n in range(5):
        gateway.deliver(_notification("alice", title=f"n{n}"))
    async with _connect(gateway, "alice") as ws:
        _welcome(await _frame(ws), "alice", unread=3)
        page = await _send(ws, type="list")
        assert [i["notification"]["title"] for i in page["items"]] == ["n4", "n3", "n2"]


async def test_mark_read_is_written_and_pushed_to_the_users_other_connections(gateway: Gateway) -> None:
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
        ack = await _send(phone, type="mark_read", id="m1", ids=[first.notification_id, "ntf_unknown"])
        assert ack == {"type": "ack", "v": 1, "id": "m1", "unread": 1}
        update = await _frame(laptop)
        assert update == {
            "type": "inbox_update",
            "v": 1,
            "items": [{"notification_id": first.notification_id, "read": True, "archived": False}],
            "unread": 1,
        }
        assert [(c.notification_id, c.attribute, c.value) for c in gateway.writer.written] == [
            (first.notification_id, "read", True)
        ]
        # The same record read back from the topic changes nothing and is not pushed again.
        gateway.apply(gateway.writer.written[0])
        assert (await _send(laptop, type="ping"))["type"] == "pong"
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


async def test_a_change_made_on_another_instance_is_pushed_here(gateway: Gateway) -> None:
    notification = _notification("alice")
    gateway.deliver(notification)
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        gateway.apply(
            InboxStateChange(
                user_id="alice",
                attribute=InboxAttribute.READ,
                value=True,
                notification_id=notification.notification_id,
                at=int(time.time() * 1000),
            )
        )
        assert (await _frame(ws))["unread"] == 0


async def test_a_change_the_broker_refuses_is_an_error_and_not_applied(gateway: Gateway) -> None:
    notification = _notification("alice")
    gateway.deliver(notification)
    gateway.writer.down = True
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        reply = await _send(ws, type="mark_read", ids=[notification.notification_id])
        assert (reply["type"], reply["code"]) == ("error", "unavailable")
        assert (await _send(ws, type="list"))["unread"] == 1


async def test_the_inbox_over_http_with_the_same_token(gateway: Gateway) -> None:
    notification = _notification("alice")
    gateway.deliver(notification)
    gateway.deliver(_notification("bob"))
    token = _token("alice")
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        status, body = await _http(gateway.port, "GET", "/inbox?limit=5", token=token)
        listed = json.loads(body)
        assert status == 200 and listed["unread"] == 1
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


async def test_a_frame_over_the_maximum_size_closes_with_1009(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(gateway_max_frame_bytes=2048)
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        await ws.send(json.dumps({"type": "ping", "v": 1, "id": "x" * 4096}))
        assert (await _closed_with(ws))[0] == 1009


# --- HTTP endpoints and lifecycle -------------------------------------------------------------------------
async def test_healthz_answers(gateway: Gateway) -> None:
    assert await _http_get(gateway.port, "/healthz") == (200, "ok")


async def test_the_demo_page_is_served(gateway: Gateway) -> None:
    status, body = await _http_get(gateway.port, "/demo")
    assert status == 200 and "<title>Herald inbox demo</title>" in body


async def test_readyz_follows_the_feed(gateway: Gateway) -> None:
    gateway.feed.readiness = Readiness(False, "waiting for topic herald.deliver.inapp")
    assert await _http_get(gateway.port, "/readyz") == (503, "waiting for topic herald.deliver.inapp")
    gateway.feed.readiness = Readiness(True, "caught up")
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
        "herald_gateway_inbox_entries 1.0",
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


# --- configuration ----------------------------------------------------------------------------------------
def test_an_unset_secret_fails_naming_the_setting() -> None:
    settings = Settings(_env_file=None, jwt_secret=None)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="HERALD_JWT_SECRET"):
        create_app(settings, feed=FakeFeed(), writer=RecordingWriter())


def test_a_secret_too_short_for_the_algorithm_fails_naming_the_setting() -> None:
    settings = Settings(_env_file=None, jwt_secret="k" * 40, jwt_algorithm="HS512")  # type: ignore[call-arg, arg-type]
    with pytest.raises(ConfigurationError, match="HERALD_JWT_SECRET: must be at least 64 bytes"):
        create_app(settings, feed=FakeFeed(), writer=RecordingWriter())


def test_a_malformed_origin_fails_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="HERALD_GATEWAY_ALLOWED_ORIGINS"):
        create_app(
            _settings(gateway_allowed_origins="app.example.com/x"), feed=FakeFeed(), writer=RecordingWriter()
        )


async def test_notification_frames_survive_a_closed_connection(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
    with pytest.raises(ConnectionClosed):
        await ws.recv()
    gateway.deliver(_notification("alice"))  # must not raise, whatever the registry still holds
