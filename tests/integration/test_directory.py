"""The user directory on the real broker: partial updates merge, misplaced profiles are moved to their
user's partition, and invalid ones are dead-lettered with the reason."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from adapters.broker.embedded import free_port
from schemas.deadletter import DeadLetter
from schemas.users import ProfileUpdate
from streams.state.directory import MERGED_AFTER, home_partition
from tests.integration.stack import Stack, produce, read_topic, wait_for_metric, wait_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(stack_factory: Any) -> Stack:
    stack: Stack = stack_factory(HERALD_WORKER_PORT=str(free_port()))
    process = stack.spawn("worker", "-l", "info", log_name="worker")
    asyncio.run(wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", process))
    return stack


def shipped(event_id: str, user: str) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "type": "order.shipped",
            "occurred_at": "2026-11-24T10:00:00Z",
            "recipients": [user],
            "data": {"order_id": event_id, "carrier": "DHL", "items": []},
        }
    ).encode()


async def inapp_for(stack: Stack, user: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for _ in range(30):
        records = await read_topic(stack.bootstrap, stack.topic("deliver.inapp"), until=100_000, timeout=1)
        found = [json.loads(r.value) for r in records if r.key == user.encode()]
        if len(found) >= count:
            break
    return found


async def test_partial_update_merges(worker: Stack) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=worker.bootstrap, acks="all")
    await producer.start()
    try:
        for update in (
            b'{"user_id": "zoe", "display_name": "Zoe"}',
            b'{"user_id": "zoe", "locale": "fr-CA"}',
        ):
            sent = await producer.send_and_wait(worker.topic("users"), update, key=b"zoe")
    finally:
        await producer.stop()
    # The worker publishes the whole merged profile after the second update, naming it (the first one's
    # merged record may land after the second update and is then skipped, never applied over it).
    after = (MERGED_AFTER, str(sent.offset).encode())
    merged = None
    for _ in range(30):
        records = await read_topic(worker.bootstrap, worker.topic("users"), until=100_000, timeout=1)
        merged = next((r for r in records if r.key == b"zoe" and after in list(r.headers)), None)
        if merged:
            break
    assert merged is not None
    whole = ProfileUpdate.model_validate_json(merged.value)
    assert whole.is_whole and (whole.display_name, whole.locale) == ("Zoe", "fr-CA")
    await produce(worker.bootstrap, worker.topic("events"), [(b"zoe", shipped("z-1", "zoe"))])
    [notification] = await inapp_for(worker, "zoe", 1)
    assert notification["title"] == "Votre commande z-1 est expédiée"  # the locale from the second update


async def test_profile_on_the_wrong_partition_is_moved_home(worker: Stack) -> None:
    home = home_partition("yan", 4)
    wrong = (home + 1) % 4
    producer = AIOKafkaProducer(bootstrap_servers=worker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            worker.topic("users"), b'{"user_id": "yan"}', key=b"yan", partition=wrong
        )
    finally:
        await producer.stop()
    await wait_for_metric(worker, "herald_profiles_rehomed_total", 1)
    await produce(worker.bootstrap, worker.topic("events"), [(b"yan", shipped("y-1", "yan"))])
    [notification] = await inapp_for(worker, "yan", 1)
    assert notification["recipient"] == "yan"


async def test_invalid_profile_is_dead_lettered(worker: Stack) -> None:
    await produce(worker.bootstrap, worker.topic("users"), [(b"xia", b'{"user_id": "xia", "phone": "12"}')])
    letter = None
    for _ in range(30):
        records = await read_topic(worker.bootstrap, worker.topic("dlq"), until=100_000, timeout=1)
        letter = next((DeadLetter.model_validate_json(r.value) for r in records if r.key == b"xia"), None)
        if letter:
            break
    assert letter is not None and letter.reason == "invalid_profile" and "phone" in letter.detail
