"""The gateway over real loopback sockets, with a fake feed and a recording writer in place of Kafka."""

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
from gateway.consumer import FeedSink, Readiness
from gateway.inbox_log import InboxUnavailable
from gateway.inbox_service import InboxService
from gateway.protocol import CLOSE_SLOW_CLIENT
from schemas.inbox import InboxStateChange
from schemas.notifications import InAppNotification
from streams.settings import ConfigurationError, Settings

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


async def _http(port: int, method: str, path: str, *, token: str | None = None, body: bytes = b"") -> tuple[int, str]:
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


def _notification(recipient: str, title: str = "Hello", body: str = "Your order is on its way.") -> InAppNotification:
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


