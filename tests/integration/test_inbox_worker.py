"""The worker keeps the in-app inbox: a real worker on the test broker, fed in-app notifications and commands,
observed on the feed, `herald.status` and its internal endpoint."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from adapters.broker.embedded import free_port
from schemas.inbox import FeedHeader, InboxAction, InboxCommand
from schemas.notifications import InAppNotification
from tests.integration.stack import INTERNAL_SECRET, Stack, produce, read_topic, wait_ready

pytestmark = pytest.mark.integration

AUTH = {"authorization": f"Bearer {INTERNAL_SECRET}"}


@pytest.fixture(scope="module")
def worker(stack_factory: Any) -> Stack:
    stack: Stack = stack_factory(HERALD_WORKER_PORT=str(free_port()), HERALD_INBOX_SIZE="3")
    process = stack.spawn("worker", "-l", "info", log_name="worker")
    asyncio.run(wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", process))
    return stack


def notification(user: str, n: int, body: str = "On its way.") -> InAppNotification:
    now = datetime.now(UTC)
    return InAppNotification(
        notification_id=f"ntf_{n}_{uuid.uuid4().hex[:6]}",
        event_id=f"evt_{n}",
        event_type="order.shipped",
        recipient=user,
        occurred_at=now,
        created_at=now,
        title=f"#{n}",
        body=body,
    )


def headers(record: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


async def internal(
    stack: Stack, path: str, body: dict[str, Any], auth: dict[str, str] = AUTH
) -> httpx.Response:
    url = f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/internal/inbox/{path}"
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            response = await client.post(url, json=body, headers=auth)
            if response.status_code != 503:
                return response
            await asyncio.sleep(0.1)
    return response


async def feed_for(stack: Stack, user: str, until: int) -> list[Any]:
    deadline = time.monotonic() + 30
    while True:
        records = [
            r
            for r in await read_topic(stack.bootstrap, stack.topic("inbox.feed"), until=10_000, timeout=2)
            if r.key == user.encode()
        ]
        if len(records) >= until or time.monotonic() > deadline:
            return records


async def test_notifications_are_kept_pushed_and_reported_and_commands_answered(worker: Stack) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"
    sent = [notification(user, n) for n in range(4)]
    await produce(
        worker.bootstrap, worker.topic("deliver.inapp"), [(user.encode(), n.to_json()) for n in sent]
    )

    feed = await feed_for(worker, user, 4)
    assert [orjson.loads(r.value)["notification"]["notification_id"] for r in feed] == [
        n.notification_id for n in sent
    ]
    assert [orjson.loads(r.value)["unread"] for r in feed] == [1, 2, 3, 3]  # HERALD_INBOX_SIZE=3
    seqs = [int(headers(r)[FeedHeader.SEQ]) for r in feed]
    assert seqs == sorted(set(seqs))

    session = (await internal(worker, "session", {"user_id": user, "since": sent[1].notification_id})).json()
    assert session["unread"] == 3 and session["recovered"] is True and session["seq"] == seqs[-1]
    assert [f["notification"]["notification_id"] for f in session["missed"]] == [
        n.notification_id for n in sent[2:]
    ]

    command = InboxCommand(
        command_id="cmd1", user_id=user, action=InboxAction.MARK_READ, ids=[sent[3].notification_id], at=1
    )
    await produce(worker.bootstrap, worker.topic("inbox.commands"), [(user.encode(), command.to_json())])
    feed = await feed_for(worker, user, 5)
    update = feed[4]
    assert headers(update)[FeedHeader.COMMAND] == "cmd1" and headers(update)[FeedHeader.KIND] == "update"
    assert orjson.loads(update.value)["unread"] == 2

    page = (await internal(worker, "page", {"user_id": user, "limit": 10})).json()
    assert [(i["notification"]["notification_id"], i["read"]) for i in page["items"]] == [
        (sent[3].notification_id, True),
        (sent[2].notification_id, False),
        (sent[1].notification_id, False),
    ]

    statuses = [
        orjson.loads(r.value)
        for r in await read_topic(worker.bootstrap, worker.topic("status"), until=10_000, timeout=3)
        if r.key == user.encode()
    ]
    assert sorted(s["outcome"] for s in statuses) == ["delivered"] * 4 + ["read"]


async def test_the_internal_endpoint_wants_the_secret(worker: Stack) -> None:
    response = await internal(worker, "session", {"user_id": "alice"}, auth={"authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert (await internal(worker, "session", {"user_id": "alice", "extra": 1})).status_code == 400


async def test_an_oversized_in_app_notification_is_dead_lettered_not_kept(worker: Stack) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"
    big = notification(user, 1, body="x" * 70_000)
    await produce(worker.bootstrap, worker.topic("deliver.inapp"), [(user.encode(), big.to_json())])
    deadline = time.monotonic() + 30
    letters: list[Any] = []
    while not letters and time.monotonic() < deadline:
        letters = [
            orjson.loads(r.value)
            for r in await read_topic(worker.bootstrap, worker.topic("dlq"), until=10_000, timeout=2)
            if r.key == user.encode()
        ]
    assert [(d["stage"], d["reason"]) for d in letters] == [("inapp", "too_large")]
    assert "HERALD_INAPP_MAX_BYTES" in letters[0]["detail"]
    assert (await internal(worker, "session", {"user_id": user})).json()["unread"] == 0
