"""The gateway over real loopback sockets, with a fake feed in place of Kafka."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.app import build_server, create_app
from gateway.auth import issue_token
from gateway.connections import ConnectionRegistry
from gateway.consumer import Deliver, Readiness
from gateway.protocol import CLOSE_SLOW_CLIENT, CLOSE_UNAUTHORIZED
from schemas.notifications import InAppNotification
from streams.settings import ConfigurationError, Settings

SECRET = "k" * 64
TIMEOUT = 5.0


class FakeFeed:
    """Stands in for Kafka: records the deliver callback so a test can hand it notifications."""

    def __init__(self) -> None:
        self.readiness = Readiness(True, "fake feed")
        self.deliver: Deliver | None = None
        self.stopped = False

    async def run(self, deliver: Deliver) -> None:
        self.deliver = deliver
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped = True


@dataclass
class Gateway:
    app: Starlette
    feed: FakeFeed
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

    def deliver(self, notification: InAppNotification) -> None:
        assert self.feed.deliver is not None, "the lifespan did not start the feed"
        self.feed.deliver(notification)

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.get_sample_value(name, labels)


GatewayFactory = Callable[..., Awaitable[Gateway]]


def _settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, jwt_secret=SECRET, **overrides)  # type: ignore[call-arg, arg-type]


@pytest.fixture
async def start_gateway() -> AsyncIterator[GatewayFactory]:
    """Starts gateways on free loopback ports (a bound socket handed to uvicorn, so no port race)."""
    running: list[Gateway] = []

    async def start(**create_options: Any) -> Gateway:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = _settings(gateway_port=port)
        feed, metrics = FakeFeed(), CollectorRegistry()
        app = create_app(settings, registry=metrics, feed=feed, **create_options)
        server = build_server(app, settings)
        gateway = Gateway(app, feed, metrics, port, server, asyncio.create_task(server.serve(sockets=[sock])))
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


def _token(user_id: str) -> str:
    return issue_token(SECRET, user_id, 60)


def _connect(gateway: Gateway, user_id: str) -> connect:
    return connect(gateway.url, additional_headers={"Authorization": f"Bearer {_token(user_id)}"})


async def _frame(ws: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(raw, str), "the gateway sends JSON text frames"
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def _closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    return ws.close_code, ws.close_reason


async def _http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    response = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def _eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


def _notification(recipient: str, title: str = "Hello") -> InAppNotification:
    now = datetime.now(UTC)
    return InAppNotification(
        notification_id=f"ntf_{recipient}_{title}",
        event_id="evt_1",
        event_type="order.shipped",
        recipient=recipient,
        occurred_at=now,
        created_at=now,
        title=title,
        body="Your order is on its way.",
        action_url="https://example.test/orders/1",
        data={"order_id": 1},
    )


# --- handshake and auth -----------------------------------------------------------------------------------
async def test_a_valid_header_token_gets_a_welcome(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        assert await _frame(ws) == {"type": "welcome", "v": 1, "user_id": "alice"}
        assert gateway.sample("herald_gateway_connections_open") == 1


async def test_a_valid_query_token_gets_a_welcome(gateway: Gateway) -> None:
    async with connect(f"{gateway.url}?token={_token('alice')}") as ws:
        assert (await _frame(ws))["user_id"] == "alice"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "missing_token"),
        ("?token=not-a-jwt", "invalid_token"),
        (f"?token={issue_token('x' * 64, 'alice', 60)}", "invalid_token"),
        (f"?token={issue_token(SECRET, 'alice', -10)}", "expired_token"),
    ],
)
async def test_bad_tokens_are_closed_with_4001_and_a_reason(
    gateway: Gateway, query: str, reason: str
) -> None:
    async with connect(gateway.url + query) as ws:
        assert await _closed_with(ws) == (CLOSE_UNAUTHORIZED, reason)
    assert gateway.sample("herald_gateway_auth_failures_total", reason=reason) == 1
    assert gateway.sample("herald_gateway_connections_open") == 0


async def test_query_tokens_never_reach_the_logs(gateway: Gateway) -> None:
    token = _token("alice")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        async with connect(f"{gateway.url}?token={token}") as ws:
            await _frame(ws)
    finally:
        logger.removeHandler(handler)
    assert any("token=[redacted]" in line for line in lines), lines
    assert not any(token in line for line in lines)


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
            assert frame["type"] == "notification"
            assert frame["v"] == 1
            assert InAppNotification.model_validate_json(json.dumps(frame["notification"])) == notification
        # Frames are written in order, so a pong right after his ping proves nothing was queued for Bob.
        await b.send(json.dumps({"type": "ping", "v": 1}))
        assert await _frame(b) == {"type": "pong", "v": 1}
        assert gateway.sample("herald_gateway_messages_pushed_total") == 2


async def test_a_notification_for_a_user_not_connected_here_is_dropped(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        gateway.deliver(_notification("carol"))
        await ws.send(json.dumps({"type": "ping", "v": 1}))
        assert (await _frame(ws))["type"] == "pong"


async def test_a_client_whose_queue_overflows_is_closed_as_slow(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(queue_size=2)
    async with _connect(gateway, "alice") as first, _connect(gateway, "alice") as second:
        await _frame(first)
        await _frame(second)
        # Delivered in one go, the senders cannot drain in between: the third frame overflows both queues.
        for n in range(3):
            gateway.deliver(_notification("alice", title=f"n{n}"))
        for ws in (first, second):
            assert await _closed_with(ws) == (CLOSE_SLOW_CLIENT, "slow_client")
        assert gateway.sample("herald_gateway_slow_client_disconnects_total") == 2
        assert len(gateway.connections) == 0

    # Within the queue's bound, a burst is delivered in order.
    async with _connect(gateway, "bob") as bob:
        await _frame(bob)
        gateway.deliver(_notification("bob", title="n0"))
        gateway.deliver(_notification("bob", title="n1"))
        assert [(await _frame(bob))["notification"]["title"] for _ in range(2)] == ["n0", "n1"]
    await _eventually(lambda: len(gateway.connections) == 0)


async def test_closed_sockets_leave_the_registry(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        assert len(gateway.connections) == 1
    await _eventually(lambda: len(gateway.connections) == 0)
    assert gateway.sample("herald_gateway_connections_open") == 0


# --- client frames ----------------------------------------------------------------------------------------
async def test_ping_gets_pong(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        await ws.send('{"type":"ping","v":1}')
        assert await _frame(ws) == {"type": "pong", "v": 1}


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


# --- HTTP endpoints and lifecycle -------------------------------------------------------------------------
async def test_healthz_answers(gateway: Gateway) -> None:
    assert await _http_get(gateway.port, "/healthz") == (200, "ok")


async def test_readyz_follows_the_feed(gateway: Gateway) -> None:
    gateway.feed.readiness = Readiness(False, "waiting for topic herald.deliver.inapp")
    assert await _http_get(gateway.port, "/readyz") == (503, "waiting for topic herald.deliver.inapp")
    gateway.feed.readiness = Readiness(True, "reading 8 partitions of herald.deliver.inapp")
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
        "herald_gateway_slow_client_disconnects_total 0.0",
        "herald_gateway_invalid_records_total 0.0",
    ):
        assert name in body
    assert "alice" not in body


async def test_shutdown_closes_sockets_with_1012_and_stops_the_feed(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        assert not gateway.feed.stopped
        await gateway.stop()
        assert await _closed_with(ws) == (1012, "")
    assert gateway.feed.stopped


# --- configuration ----------------------------------------------------------------------------------------
def test_an_unset_secret_fails_naming_the_setting() -> None:
    settings = Settings(_env_file=None, jwt_secret=None)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="HERALD_JWT_SECRET"):
        create_app(settings, feed=FakeFeed())


def test_a_secret_too_short_for_the_algorithm_fails_naming_the_setting() -> None:
    settings = Settings(_env_file=None, jwt_secret="k" * 40, jwt_algorithm="HS512")  # type: ignore[call-arg, arg-type]
    with pytest.raises(ConfigurationError, match="HERALD_JWT_SECRET: must be at least 64 bytes"):
        create_app(settings, feed=FakeFeed())


async def test_notification_frames_survive_a_closed_connection(gateway: Gateway) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
    with pytest.raises(ConnectionClosed):
        await ws.recv()
    gateway.deliver(_notification("alice"))  # must not raise, whatever the registry still holds
