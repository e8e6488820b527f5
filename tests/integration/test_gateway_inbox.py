"""Gateway instances on the real broker: fan-out across instances, the inbox, recovery, restarts, the demo."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect

from adapters.broker.topics import ensure_topics
from gateway.app import build_server, create_app
from gateway.auth import issue_token
from gateway.inbox_service import InboxService
from kernel.settings import Settings
from schemas.notifications import InAppNotification

pytestmark = pytest.mark.integration

SECRET = "integration-secret-" + "x" * 48
TIMEOUT = 15.0
CHROMIUM = "chromium"


@dataclass
class Instance:
    app: Starlette
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def stop(self) -> None:
        if not self.task.done():
            self.server.should_exit = True
            await asyncio.wait_for(self.task, TIMEOUT)


@dataclass
class Deployment:
    """One isolated set of topics, and the gateway instances started on it."""

    broker_url: str
    bootstrap: list[str]
    prefix: str
    instances: list[Instance]
    producer: AIOKafkaProducer

    @property
    def inapp(self) -> str:
        return f"{self.prefix}.deliver.inapp"

    async def start(self) -> Instance:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            broker=self.broker_url,
            jwt_secret=SECRET,
            partitions=4,
            topic_inapp=self.inapp,
            inbox_topic=f"{self.prefix}.inbox",
            gateway_port=port,
        )
        app = create_app(settings, registry=CollectorRegistry())
        server = build_server(app, settings)
        instance = Instance(app, server, asyncio.create_task(server.serve(sockets=[sock])), port)
        self.instances.append(instance)
        service: InboxService = app.state.service
        await _eventually(lambda: server.started and service.ready, timeout=30)
        return instance

    async def produce(self, *notifications: InAppNotification) -> None:
        for notification in notifications:
            await self.producer.send_and_wait(
                self.inapp, key=notification.recipient.encode(), value=notification.to_json()
            )


@pytest.fixture
async def deployment(broker_url: str, bootstrap_servers: list[str]) -> AsyncIterator[Deployment]:
    prefix = f"g{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap_servers, [f"{prefix}.deliver.inapp"], 4, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    deployment = Deployment(broker_url, bootstrap_servers, prefix, [], producer)
    try:
        yield deployment
    finally:
        for instance in deployment.instances:
            await instance.stop()
        await producer.stop()


async def _eventually(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def _token(user_id: str) -> str:
    return issue_token(SECRET, user_id, 300)


def _connect(instance: Instance, user_id: str, query: str = "") -> connect:
    return connect(instance.url + query, additional_headers={"Authorization": f"Bearer {_token(user_id)}"})


async def _frame(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def _send(ws: ClientConnection, **frame: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"v": 1, **frame}))
    while True:
        reply = await _frame(ws)
        if reply["type"] not in ("notification", "inbox_update"):
            return reply


def _notification(recipient: str, title: str) -> InAppNotification:
    now = datetime.now(UTC)
    return InAppNotification(
        notification_id=f"ntf_{uuid.uuid4().hex}",
        event_id="evt_1",
        event_type="order.shipped",
        recipient=recipient,
        occurred_at=now,
        created_at=now,
        title=title,
        body="On its way.",
    )


async def test_one_user_on_three_connections_across_two_instances_gets_everything_and_no_one_else_does(
    deployment: Deployment,
) -> None:
    a, b = await deployment.start(), await deployment.start()
    async with (
        _connect(a, "alice") as a1,
        _connect(a, "alice") as a2,
        _connect(b, "alice") as b1,
        _connect(b, "bob") as bob,
    ):
        for ws in (a1, a2, b1, bob):
            assert (await _frame(ws))["type"] == "welcome"
        sent = [_notification("alice", f"n{n}") for n in range(3)]
        await deployment.produce(*sent)
        for ws in (a1, a2, b1):
            titles = [(await _frame(ws))["notification"]["title"] for _ in sent]
            assert titles == ["n0", "n1", "n2"]
        assert (await _send(bob, type="ping"))["type"] == "pong"
        assert (await _send(bob, type="list"))["items"] == []

        # Mark read on one instance: the connections on the other instance hear of it through the topic.
        ack = await _send(a1, type="mark_read", ids=[sent[0].notification_id])
        assert ack["unread"] == 2
        for ws in (a2, b1):
            update = await _frame(ws)
            assert update["type"] == "inbox_update" and update["unread"] == 2
            assert update["items"] == [
                {"notification_id": sent[0].notification_id, "read": True, "archived": False}
            ]
        # Over HTTP on the other instance, with the same token.
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"http://127.0.0.1:{b.port}/inbox/mark_all_read",
                headers={"Authorization": f"Bearer {_token('alice')}"},
            )
        assert response.json() == {"unread": 0}
        assert (await _frame(a1))["unread"] == 0


async def test_a_reconnect_recovers_what_was_produced_while_away_even_on_another_instance(
    deployment: Deployment,
) -> None:
    a, b = await deployment.start(), await deployment.start()
    async with _connect(a, "alice") as ws:
        await _frame(ws)
        await deployment.produce(_notification("alice", "seen"))
        last_seen = (await _frame(ws))["notification"]["notification_id"]
    missed = [_notification("alice", f"missed{n}") for n in range(3)]
    await deployment.produce(*missed)
    service: InboxService = b.app.state.service
    await _eventually(lambda: service.unread("alice") == 4)
    async with _connect(b, "alice", f"?since={last_seen}") as ws:
        welcome = await _frame(ws)
        assert (welcome["recovered"], welcome["missed"]) == (True, 3)
        await deployment.produce(_notification("alice", "live"))
        titles = [(await _frame(ws))["notification"]["title"] for _ in range(4)]
        assert titles == ["missed0", "missed1", "missed2", "live"]
    async with _connect(b, "alice", "?since=ntf_long_gone") as ws:
        assert (await _frame(ws))["recovered"] is False


async def test_a_gateway_restart_loses_no_inbox_state(deployment: Deployment) -> None:
    first = await deployment.start()
    sent = [_notification("alice", f"n{n}") for n in range(4)]
    await deployment.produce(*sent)
    async with _connect(first, "alice") as ws:
        await _frame(ws)
        await _eventually(lambda: first.app.state.service.unread("alice") == 4)
        await _send(ws, type="mark_read", ids=[sent[1].notification_id])
        await _send(ws, type="archive", ids=[sent[0].notification_id])
        before = await _send(ws, type="list")
    await first.stop()

    restarted = await deployment.start()
    async with _connect(restarted, "alice") as ws:
        assert (await _frame(ws))["unread"] == 2
        after = await _send(ws, type="list")
        assert after["items"] == before["items"]
        assert [i["notification"]["title"] for i in after["items"]] == ["n3", "n2", "n1"]
        assert [i["read"] for i in after["items"]] == [False, False, True]
        archived = await _send(ws, type="list", archived=True)
        assert [i["notification"]["title"] for i in archived["items"]] == ["n0"]


# --- the demo page in headless Chromium ---------------------------------------------------------------------
class Browser:
    """Headless Chromium driven over the DevTools protocol: one page, and JavaScript evaluated in it."""

    def __init__(self, process: subprocess.Popen[bytes], page: ClientConnection) -> None:
        self._process = process
        self._page = page
        self._ids = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._ids += 1
        await self._page.send(json.dumps({"id": self._ids, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self._page.recv(), TIMEOUT))
            if message.get("id") == self._ids:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    async def eval(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, expected: Any) -> None:
        value = None
        for _ in range(int(TIMEOUT / 0.05)):
            value = await self.eval(expression)
            if value == expected:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{expression} is {value!r}, not {expected!r}")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which(CHROMIUM)
    if executable is None:
        pytest.fail("Chromium is required for the demo-page test: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-extensions",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            await _eventually(lambda: port_file.exists() and len(port_file.read_text().splitlines()) >= 2, 30)
            port = int(port_file.read_text().splitlines()[0])
            async with httpx.AsyncClient() as http:
                targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
            page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with connect(page_url, max_size=None) as page:
                yield Browser(process, page)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_the_demo_page_shows_notifications_live_with_a_badge_and_mark_read(
    deployment: Deployment, browser: Browser
) -> None:
    gateway = await deployment.start()
    await browser.call("Page.enable")
    await browser.call("Page.navigate", url=f"http://127.0.0.1:{gateway.port}/demo")
    await browser.wait_for("document.readyState", "complete")
    await browser.eval(
        f"document.getElementById('token').value = {json.dumps(_token('alice'))};"
        "document.getElementById('connect').click();"
    )
    await browser.wait_for("document.getElementById('status').textContent", "connected as alice")

    await deployment.produce(_notification("alice", "Your order shipped"), _notification("bob", "Not yours"))
    await browser.wait_for("document.getElementById('badge').textContent", "1")
    titles = "[...document.querySelectorAll('#items .title')].map(e => e.textContent)"
    await browser.wait_for(titles, ["Your order shipped"])

    await browser.eval("document.querySelector('#items li.unread button.toggle').click()")
    await browser.wait_for("document.getElementById('badge').textContent", "0")
    service: InboxService = gateway.app.state.service
    assert service.unread("alice") == 0
