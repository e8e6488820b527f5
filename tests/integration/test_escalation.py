"""Escalate if unread on the real broker: a worker routes a rule that sends in-app now, push after a few
seconds and email after a few more. One user reads the in-app notification in time (a `mark_read` on the
inbox commands topic, as a gateway sends it) and gets neither; the other never reads it and gets both, in
order, through the provider fakes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from adapters.broker.embedded import free_port
from adapters.email.sink import SmtpSink
from schemas.channels import Channel
from schemas.inbox import InboxAction, InboxCommand
from schemas.notifications import notification_id
from schemas.status import DeliveryStatus
from tests.fakes.fcm import FakeFcm, make_service_account
from tests.integration.stack import Stack, produce, wait_for_metric, wait_ready

pytestmark = pytest.mark.integration

# The first step must come due after the reader's `mark_read` reached the inbox: the in-app notification's
# trip to the inbox, the test seeing its status and the command's trip took about 0.2 s when measured, but a
# Faust hop on the embedded broker may take up to 1.5 s (its fetches wait), so 5 s leaves room.
RULES = """
rules:
  - match: message.received
    category: messages
    channels:
      inapp: {template: direct_message}
      push: {template: direct_message}
      email: {template: direct_message}
    escalate:
      - {after: 5s, channel: push}
      - {after: 8s, channel: email}
"""


@pytest.fixture(scope="module")
def fcm() -> Iterator[FakeFcm]:
    with FakeFcm("herald-test") as fake:
        yield fake


@pytest.fixture(scope="module")
def worker(stack_factory: Any, fcm: FakeFcm, smtp_server: SmtpSink, tmp_path_factory: Any) -> Stack:
    directory = Path(tmp_path_factory.mktemp("escalation"))
    account, fcm.public_key = make_service_account(fcm.token_uri, "herald-test")
    (directory / "service-account.json").write_text(json.dumps(account))
    (directory / "rules.yaml").write_text(RULES)
    host, port = smtp_server.address
    stack: Stack = stack_factory(
        HERALD_WORKER_PORT=str(free_port()),
        HERALD_RULES_FILE=str(directory / "rules.yaml"),
        HERALD_SMTP_HOST=host,
        HERALD_SMTP_PORT=str(port),
        HERALD_FCM_SERVICE_ACCOUNT_FILE=str(directory / "service-account.json"),
        HERALD_FCM_BASE_URL=fcm.url,
    )
    process = stack.spawn("worker", "-l", "info", log_name="worker")
    asyncio.run(wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", process))
    return stack


class StatusFeed:
    """`herald.status` read as it is written (one consumer for the whole test, not a re-read per look)."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._consumer: AIOKafkaConsumer | None = None
        self.seen: list[DeliveryStatus] = []

    async def __aenter__(self) -> StatusFeed:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._stack.bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        topic = self._stack.topic("status")
        partitions: set[int] | None = None
        while not partitions:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        self._consumer = consumer
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def until(
        self, done: Callable[[list[DeliveryStatus]], bool], timeout: float = 30.0
    ) -> list[DeliveryStatus]:
        assert self._consumer is not None
        deadline = time.monotonic() + timeout
        while not done(self.seen):
            assert time.monotonic() < deadline, f"gave up waiting; statuses so far: {self.brief()}"
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                self.seen.extend(DeliveryStatus.model_validate_json(r.value) for r in records)
        return self.seen

    def of(self, user: str) -> list[tuple[str, str, str | None]]:
        """A user's statuses in the order written (one partition per user), as (channel, outcome, reason)."""
        return [(s.channel, s.outcome, s.reason) for s in self.seen if s.recipient == user]

    def brief(self) -> dict[str, list[tuple[str, str, str | None]]]:
        return {user: self.of(user) for user in dict.fromkeys(s.recipient for s in self.seen)}


def message_for(user: str) -> tuple[bytes, bytes]:
    event = {
        "event_id": f"msg-{user}",
        "type": "message.received",
        "occurred_at": "2026-11-30T10:00:00Z",
        "recipients": [user],
        "data": {"sender": "Bob", "preview": "Lunch at noon?", "conversation_id": f"c-{user}"},
    }
    return user.encode(), json.dumps(event).encode()


def has(user: str, channel: str, outcome: str) -> Callable[[list[DeliveryStatus]], bool]:
    return lambda seen: any(
        s.recipient == user and s.channel == channel and s.outcome == outcome for s in seen
    )


async def test_a_read_cancels_the_steps_and_an_unread_message_escalates_to_push_then_email(
    worker: Stack, fcm: FakeFcm, smtp_server: SmtpSink
) -> None:
    users = ["reader", "ignorer"]
    profiles = [
        (
            u.encode(),
            json.dumps(
                {
                    "user_id": u,
                    "email": f"{u}@example.com",
                    "devices": [{"token": f"{u}-phone", "platform": "android"}],
                }
            ).encode(),
        )
        for u in users
    ]
    await produce(worker.bootstrap, worker.topic("users"), profiles)
    await wait_for_metric(worker, "herald_profiles_applied_total", len(users))

    async with StatusFeed(worker) as feed:
        await produce(worker.bootstrap, worker.topic("events"), [message_for(u) for u in users])

        # The reader's client marks the in-app notification read once it is in the inbox (the inbox ignores
        # ids it does not hold), through the commands topic as a gateway does.
        await feed.until(has("reader", "inapp", "delivered"))
        watched = notification_id("msg-reader", "reader", Channel.INAPP)
        command = InboxCommand(
            command_id="read-1",
            user_id="reader",
            action=InboxAction.MARK_READ,
            ids=[watched],
            at=int(time.time() * 1000),
        )
        await produce(worker.bootstrap, worker.topic("inbox.commands"), [(b"reader", command.to_json())])

        await feed.until(
            lambda seen: (
                has("ignorer", "email", "delivered")(seen)
                and sum(1 for s in seen if s.recipient == "reader" and s.reason == "cancelled_read") == 2
            ),
            timeout=40,
        )

    reader, ignorer = feed.of("reader"), feed.of("ignorer")
    for statuses in (reader, ignorer):
        assert ("push", "deferred", "escalation") in statuses and (
            "email",
            "deferred",
            "escalation",
        ) in statuses
        assert ("inapp", "delivered", None) in statuses
    assert ("inapp", "read", None) in reader
    # The steps' channels as each user's statuses give them, in the order written (one partition each).
    assert [s for s in reader if s[0] != "inapp" and s[1] != "deferred"] == [
        ("push", "skipped", "cancelled_read"),
        ("email", "skipped", "cancelled_read"),
    ]
    assert [s for s in ignorer if s[0] != "inapp" and s[1] != "deferred"] == [
        ("push", "delivered", None),
        ("email", "delivered", None),
    ]
    assert [r.json()["message"]["token"] for r in fcm.sends] == ["ignorer-phone"]
    assert [m["To"] for m in smtp_server.messages] == ["ignorer@example.com"]
