"""Channel delivery on the real broker against a real SMTP server: retries through retry topics, the DLQ for
permanent refusals, and duplicates suppressed before they reach a person."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from adapters.broker.embedded import free_port
from adapters.email.sink import SmtpSink
from schemas.deadletter import DeadLetter
from schemas.status import DeliveryStatus
from tests.integration.stack import Stack, produce, read_topic, wait_for_metric, wait_ready

pytestmark = pytest.mark.integration


def event(event_id: str, recipient: str, order: str) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "type": "order.shipped",
            "occurred_at": "2026-11-24T10:00:00Z",
            "recipients": [recipient],
            "data": {"order_id": order, "carrier": "DHL", "items": ["Kettle"]},
        }
    ).encode()


@pytest.fixture(scope="module")
def worker(stack_factory: Any, smtp_server: SmtpSink) -> Stack:
    host, port = smtp_server.address
    stack: Stack = stack_factory(
        HERALD_SMTP_HOST=host,
        HERALD_SMTP_PORT=str(port),
        HERALD_WORKER_PORT=str(free_port()),
        HERALD_RETRY_BASE_DELAY_SECONDS="0.3",
        HERALD_RETRY_MULTIPLIER="2",
        HERALD_RETRY_JITTER="0",
        HERALD_RETRY_MAX_ATTEMPTS="3",
        HERALD_RETRY_TIERS="2",
    )
    process = stack.spawn("worker", "-l", "info", log_name="worker")
    asyncio.run(wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", process))
    users = [{"user_id": u, "email": f"{u}@example.com"} for u in ("ann", "ben", "cat", "dan")]
    asyncio.run(
        produce(
            stack.bootstrap,
            stack.topic("users"),
            [(u["user_id"].encode(), json.dumps(u).encode()) for u in users],
        )
    )
    # Every profile applied before a test's event arrives: a race the tests are not about.
    asyncio.run(wait_for_metric(stack, "herald_profiles_applied_total", len(users)))
    return stack


async def mails_to(sink: SmtpSink, address: str, count: int, timeout: float = 30) -> list[Any]:
    for _ in range(int(timeout / 0.1)):
        found = [m for m in sink.messages if m["To"] == address]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    return [m for m in sink.messages if m["To"] == address]


async def statuses(stack: Stack, notification_filter: str, count: int) -> list[DeliveryStatus]:
    found: list[DeliveryStatus] = []
    for _ in range(60):
        records = await read_topic(stack.bootstrap, stack.topic("status"), until=10_000, timeout=1)
        found = [DeliveryStatus.model_validate_json(r.value) for r in records]
        found = [s for s in found if s.recipient == notification_filter]
        if len(found) >= count:
            break
    return found


async def test_transient_refusals_are_retried_and_delivered_once(
    worker: Stack, smtp_server: SmtpSink
) -> None:
    smtp_server.refuse_next(2, "451 4.3.0 Try again later")
    await produce(worker.bootstrap, worker.topic("events"), [(b"ann", event("e-ann", "ann", "R-1"))])
    [mail] = await mails_to(smtp_server, "ann@example.com", 1)
    assert mail["Subject"] == "Your order R-1 has shipped"
    history = await statuses(worker, "ann", 3)
    attempts = [(s.attempt, s.outcome.value, s.provider_code) for s in history if s.channel == "email"]
    assert attempts == [(1, "failed", "451"), (2, "failed", "451"), (3, "delivered", None)]
    # Backoff is honoured (0.3 s then 0.6 s, no jitter): no hot loop between attempts.
    at = [s.at for s in history if s.channel == "email"]
    assert (at[1] - at[0]).total_seconds() >= 0.3
    assert (at[2] - at[1]).total_seconds() >= 0.6
    await asyncio.sleep(1)
    assert len([m for m in smtp_server.messages if m["To"] == "ann@example.com"]) == 1


async def test_permanent_refusal_is_dead_lettered_with_the_code(worker: Stack, smtp_server: SmtpSink) -> None:
    smtp_server.refuse_next(1, "550 5.1.1 No such user")
    await produce(worker.bootstrap, worker.topic("events"), [(b"ben", event("e-ben", "ben", "P-1"))])
    letter = None
    for _ in range(60):
        records = await read_topic(worker.bootstrap, worker.topic("dlq"), until=10_000, timeout=1)
        letters = [DeadLetter.model_validate_json(r.value) for r in records]
        letter = next((x for x in letters if x.stage == "email" and b"ben@example.com" in x.original), None)
        if letter:
            break
    assert letter is not None, "no dead letter for ben's email"
    assert letter.reason == "provider_refused" and "550" in letter.detail
    history = await statuses(worker, "ben", 2)
    assert [s.outcome.value for s in history if s.channel == "email"] == ["failed", "dead_lettered"]
    assert not [m for m in smtp_server.messages if m["To"] == "ben@example.com"]


async def test_duplicate_event_reaches_the_person_once(worker: Stack, smtp_server: SmtpSink) -> None:
    twice = event("e-cat", "cat", "D-1")
    await produce(worker.bootstrap, worker.topic("events"), [(b"cat", twice), (b"cat", twice)])
    await mails_to(smtp_server, "cat@example.com", 1)
    history = await statuses(worker, "cat", 2)
    email = [(s.outcome.value, s.reason) for s in history if s.channel == "email"]
    assert email == [("delivered", None), ("skipped", "duplicate")]
    assert len([m for m in smtp_server.messages if m["To"] == "cat@example.com"]) == 1


async def test_retries_exhausted_end_on_the_dlq(worker: Stack, smtp_server: SmtpSink) -> None:
    smtp_server.refuse_next(3, "421 4.7.0 Service busy")
    await produce(worker.bootstrap, worker.topic("events"), [(b"dan", event("e-dan", "dan", "X-1"))])
    history = await statuses(worker, "dan", 4)
    assert [(s.attempt, s.outcome.value) for s in history if s.channel == "email"] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
        (3, "dead_lettered"),
    ]
    assert history[-1].reason == "retries_exhausted"
    assert not [m for m in smtp_server.messages if m["To"] == "dan@example.com"]
