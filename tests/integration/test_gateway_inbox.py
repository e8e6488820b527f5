"""Workers and gateways as users run them (processes of their own) on the real broker: the inbox kept by the
worker that owns each user, gateways that keep nothing but their sockets, a worker killed under them, the
demo page in headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from adapters.broker.embedded import free_port
from gateway.auth import issue_token
from schemas.notifications import InAppNotification
from streams.state.directory import home_partition
from tests.integration.browser import Browser
from tests.integration.stack import Stack, produce, wait_ready

pytestmark = pytest.mark.integration

SECRET = "integration-secret-" + "x" * 48
TIMEOUT = 20.0
PARTITIONS = 4


@dataclass
class Process:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@dataclass
class Deployment:
    stack: Stack
    workers: list[Process]
    gateways: list[Process]

    def start_worker(self) -> Process:
        port = free_port()
        name = f"worker{len(self.workers)}"
        process = self.stack.spawn("worker", "-l", "info", log_name=name, HERALD_WORKER_PORT=str(port))
        worker = Process(process, port)
        self.workers.append(worker)
        return worker

    async def start_gateway(self, worker: Process) -> Process:
        port = free_port()
        process = self.stack.spawn(
            "gateway",
            log_name=f"gateway{len(self.gateways)}",
            HERALD_GATEWAY_PORT=str(port),
            HERALD_GATEWAY_WORKER_URL=worker.http,
        )
        gateway = Process(process, port)
        self.gateways.append(gateway)
        await wait_ready(f"{gateway.http}/readyz", process, timeout=90)
        return gateway

    async def produce(self, *notifications: InAppNotification) -> None:
        await produce(
            self.stack.bootstrap,
            self.stack.topic("deliver.inapp"),
            [(n.recipient.encode(), n.to_json()) for n in notifications],
        )


def _deployment(stack_factory: Any) -> Deployment:
    stack: Stack = stack_factory(
        HERALD_JWT_SECRET=SECRET,
        HERALD_PARTITIONS=str(PARTITIONS),
        HERALD_GATEWAY_OWNER_TIMEOUT_SECONDS="5",
    )
    return Deployment(stack, [], [])


@pytest.fixture(scope="module")
def shared(stack_factory: Any) -> Iterator[Deployment]:
    """One worker and one gateway for the tests that do not stop either."""
    deployment = _deployment(stack_factory)
    worker = deployment.start_worker()
    asyncio.run(wait_ready(f"{worker.http}/readyz", worker.process))
    yield deployment


async def _eventually(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def _token(user_id: str) -> str:
    return issue_token(SECRET, user_id, 300)


def _connect(gateway: Process, user_id: str, query: str = "") -> connect:
    return connect(gateway.ws + query, additional_headers={"Authorization": f"Bearer {_token(user_id)}"})


async def _frame(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def _send(ws: ClientConnection, **frame: Any) -> dict[str, Any]:
    """Send a command and return its answer; frames pushed meanwhile are skipped."""
    await ws.send(json.dumps({"v": 1, **frame}))
    while True:
        reply = await _frame(ws)
        if reply["type"] not in ("notification", "inbox_update"):
            return reply


async def _until_answered(ws: ClientConnection, **frame: Any) -> dict[str, Any]:
    """`_send` again while the owner is unavailable (a rebalance under way)."""
    deadline = time.monotonic() + 60
    while True:
        reply = await _send(ws, **frame)
        if reply["type"] != "error" or reply["code"] != "unavailable" or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(0.5)


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


def _users_on_every_partition() -> list[str]:
    """One user per partition, so whichever partitions a worker owns, some user is on it."""
    users: dict[int, str] = {}
    n = 0
    while len(users) < PARTITIONS:
        user = f"user{n}"
        users.setdefault(home_partition(user, PARTITIONS), user)
        n += 1
    return [users[p] for p in range(PARTITIONS)]


async def test_two_workers_and_two_gateways_keep_every_inbox_whole_when_a_worker_dies(
    stack_factory: Any,
) -> None:
    deployment = _deployment(stack_factory)
    first, second = deployment.start_worker(), deployment.start_worker()
    await wait_ready(f"{first.http}/readyz", first.process)
    await wait_ready(f"{second.http}/readyz", second.process)
    # Both gateways ask the second worker, which forwards what the first one owns.
    a = await deployment.start_gateway(second)
    b = await deployment.start_gateway(second)
    users = _users_on_every_partition()
    async with contextlib.AsyncExitStack() as sockets:
        on_a = {u: await sockets.enter_async_context(_connect(a, u)) for u in users}
        on_b = {u: await sockets.enter_async_context(_connect(b, u)) for u in users}
        for ws in (*on_a.values(), *on_b.values()):
            assert (await _frame(ws))["type"] == "welcome"
        sent = {u: [_notification(u, f"{u}-n{n}") for n in range(3)] for u in users}
        await deployment.produce(*(n for u in users for n in sent[u]))
        # Every connection of each user gets each of its notifications once, in order, and no one else's.
        for u in users:
            for ws in (on_a[u], on_b[u]):
                titles = [(await _frame(ws))["notification"]["title"] for _ in range(3)]
                assert titles == [f"{u}-n0", f"{u}-n1", f"{u}-n2"]

        # Marked read through gateway A, seen on gateway B.
        for u in users:
            ack = await _send(on_a[u], type="mark_read", ids=[sent[u][0].notification_id])
            assert ack == {"type": "ack", "v": 1, "unread": 2}
            update = await _frame(on_b[u])
            assert update["type"] == "inbox_update" and update["unread"] == 2
            assert update["items"] == [
                {"notification_id": sent[u][0].notification_id, "read": True, "archived": False}
            ]

        # Preferences are read from the owner the same way: gateway B asks the second worker, which forwards.
        for u in users:
            view = await _preferences(b, u)
            assert [c["category"] for c in view["categories"]] == ["messages", "orders", "security", "social"]

        # The first worker dies: the second takes its partitions, reading their inboxes from the changelog.
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        for u in users:
            listed = await _until_answered(on_b[u], type="list")
            assert listed["type"] == "inbox", listed
            assert [(i["notification"]["title"], i["read"]) for i in listed["items"]] == [
                (f"{u}-n2", False),
                (f"{u}-n1", False),
                (f"{u}-n0", True),
            ]
            assert listed["unread"] == 2
        # And live traffic flows again, once per connection.
        after = [_notification(u, f"{u}-after") for u in users]
        await deployment.produce(*after)
        for u in users:
            for ws in (on_a[u], on_b[u]):
                frame = await _frame(ws)
                while frame["type"] != "notification":
                    frame = await _frame(ws)
                assert frame["notification"]["title"] == f"{u}-after" and frame["unread"] == 3


async def test_a_reconnect_recovers_what_was_produced_while_away_even_on_another_gateway(
    shared: Deployment,
) -> None:
    worker = shared.workers[0]
    a, b = await shared.start_gateway(worker), await shared.start_gateway(worker)
    user = f"u{uuid.uuid4().hex[:6]}"
    async with _connect(a, user) as ws:
        await _frame(ws)
        await shared.produce(_notification(user, "seen"))
        last_seen = (await _frame(ws))["notification"]["notification_id"]
    missed = [_notification(user, f"missed{n}") for n in range(3)]
    await shared.produce(*missed)
    # The worker has kept all three before the reconnect asks for them.
    await _eventually_unread(b, user, 4)
    async with _connect(b, user, f"?since={last_seen}") as ws:
        welcome = await _frame(ws)
        assert (welcome["recovered"], welcome["missed"]) == (True, 3)
        await shared.produce(_notification(user, "live"))
        titles = [(await _frame(ws))["notification"]["title"] for _ in range(4)]
        assert titles == ["missed0", "missed1", "missed2", "live"]
    async with _connect(b, user, "?since=ntf_long_gone") as ws:
        assert (await _frame(ws))["recovered"] is False


async def _preferences(gateway: Process, user: str) -> dict[str, Any]:
    """`GET /preferences`, again while the owner is unavailable (a rebalance under way)."""
    async with httpx.AsyncClient() as http:
        async with asyncio.timeout(TIMEOUT):
            while True:
                response = await http.get(
                    f"{gateway.http}/preferences", headers={"Authorization": f"Bearer {_token(user)}"}
                )
                if response.status_code != 503:
                    assert response.status_code == 200, response.text
                    view: dict[str, Any] = response.json()
                    return view
                await asyncio.sleep(0.2)


async def _eventually_unread(gateway: Process, user: str, unread: int) -> None:
    async with httpx.AsyncClient() as http:
        async with asyncio.timeout(TIMEOUT):
            while True:
                response = await http.get(
                    f"{gateway.http}/inbox/unread", headers={"Authorization": f"Bearer {_token(user)}"}
                )
                if response.status_code == 200 and response.json()["unread"] == unread:
                    return
                await asyncio.sleep(0.1)


async def test_a_gateway_restart_changes_nothing_in_the_inbox(shared: Deployment) -> None:
    worker = shared.workers[0]
    first = await shared.start_gateway(worker)
    user = f"u{uuid.uuid4().hex[:6]}"
    sent = [_notification(user, f"n{n}") for n in range(4)]
    await shared.produce(*sent)
    await _eventually_unread(first, user, 4)
    async with _connect(first, user) as ws:
        await _frame(ws)
        await _send(ws, type="mark_read", ids=[sent[1].notification_id])
        await _send(ws, type="archive", ids=[sent[0].notification_id])
        before = await _send(ws, type="list")
    first.process.send_signal(signal.SIGTERM)
    first.process.wait(timeout=30)

    restarted = await shared.start_gateway(worker)
    async with _connect(restarted, user) as ws:
        assert (await _frame(ws))["unread"] == 2
        after = await _send(ws, type="list")
        assert after["items"] == before["items"]
        assert [i["notification"]["title"] for i in after["items"]] == ["n3", "n2", "n1"]
        assert [i["read"] for i in after["items"]] == [False, False, True]
        archived = await _send(ws, type="list", archived=True)
        assert [i["notification"]["title"] for i in archived["items"]] == ["n0"]


# --- the demo page in headless Chromium ---------------------------------------------------------------------
async def test_the_demo_page_shows_notifications_live_with_a_badge_and_mark_read(
    shared: Deployment, browser: Browser
) -> None:
    gateway = await shared.start_gateway(shared.workers[0])
    user = f"u{uuid.uuid4().hex[:6]}"
    await browser.open(f"{gateway.http}/demo")
    await browser.eval(
        f"document.getElementById('token').value = {json.dumps(_token(user))};"
        "document.getElementById('connect').click();"
    )
    await browser.wait_for("document.getElementById('status').textContent", f"connected as {user}")

    await shared.produce(_notification(user, "Your order shipped"), _notification("bob", "Not yours"))
    await browser.wait_for("document.getElementById('badge').textContent", "1")
    titles = "[...document.querySelectorAll('#items .title')].map(e => e.textContent)"
    await browser.wait_for(titles, ["Your order shipped"])

    await browser.eval("document.querySelector('#items li.unread button.toggle').click()")
    await browser.wait_for("document.getElementById('badge').textContent", "0")
    await _eventually_unread(gateway, user, 0)
