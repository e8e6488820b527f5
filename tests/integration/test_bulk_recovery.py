"""A cold-started worker bulk-loads its tables from the changelogs (streams.runtime.bulk_recovery), on the
real broker: every key comes back with its latest value and deleted keys stay deleted.

The table is read back through the worker's own behaviour: a partial profile update
merges onto the stored profile and the worker writes the merged profile to the users changelog, so after one
partial update per user (sent while the worker recovers), the changelog's newest records show what the table
held for every user (on both stores). On RocksDB the store's files are also read after a clean stop."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from rocksdict import AccessType, Options, Rdict

from adapters.broker.embedded import free_port
from adapters.broker.topics import ensure_topics
from kernel.topics import changelog_topic_name
from streams.state.directory import home_partition
from tests.integration.stack import Stack, read_topic, wait_for_metric, wait_ready

pytestmark = pytest.mark.integration

USERS = 3_000  # the stored profiles; with the changes below about 4,800 changelog records
PARTITIONS = 4
OFFSET_KEY = b"__faust\0offset__"  # where Faust's RocksDB store keeps a partition's changelog offset


def expected_name(index: int) -> str | None:
    """The display name a user's latest changelog record gives: every 5th user deleted (every 10th written
    again after the delete), every 3rd renamed."""
    if index % 5 == 0 and index % 10 != 0:
        return None
    if index % 10 == 0:
        return f"again {index}"
    if index % 3 == 0:
        return f"renamed {index}"
    return f"first {index}"


def changelog_records(users: int) -> list[tuple[str, bytes | None]]:
    """(user id, stored profile or None for a delete), in the order they are written."""
    records: list[tuple[str, bytes | None]] = []
    profile = {"devices": [], "locale": "en", "timezone": "UTC", "inapp_enabled": True}

    def stored(index: int, name: str) -> bytes:
        return json.dumps({**profile, "user_id": f"u{index}", "display_name": name}).encode()

    records += [(f"u{i}", stored(i, f"first {i}")) for i in range(users)]
    records += [(f"u{i}", stored(i, f"renamed {i}")) for i in range(users) if i % 3 == 0]
    records += [(f"u{i}", None) for i in range(users) if i % 5 == 0]
    records += [(f"u{i}", stored(i, f"again {i}")) for i in range(users) if i % 10 == 0]
    return records


async def send_all(bootstrap: list[str], topic: str, records: Sequence[tuple[bytes, bytes | None]]) -> None:
    """Each (key, value) to the partition of the user it is keyed by (`user_of`)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, value, key=key, partition=home_partition(user_of(key), PARTITIONS))
            for key, value in records
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def user_of(key: bytes) -> str:
    """The user id in a users-topic key (the id) or a changelog key (the id as a JSON string)."""
    text = key.decode()
    return str(json.loads(text)) if text.startswith('"') else text


async def write_changelog(stack: Stack) -> tuple[str, list[tuple[str, bytes | None]], dict[int, int]]:
    """The users changelog, written before any worker runs: its name, the records, and each partition's
    record count (the changelog is new, so also the offset the worker's own writes start at)."""
    changelog = changelog_topic_name(stack.env["HERALD_APP_ID"], "users")
    await ensure_topics(stack.bootstrap, [changelog], PARTITIONS, 1, compacted={changelog})
    written = changelog_records(USERS)
    await send_all(
        stack.bootstrap, changelog, [(json.dumps(user).encode(), value) for user, value in written]
    )
    counts = dict.fromkeys(range(PARTITIONS), 0)
    for user, _ in written:
        counts[home_partition(user, PARTITIONS)] += 1
    return changelog, written, counts


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
async def test_a_cold_worker_recovers_every_key_and_updates_land_on_top(
    stack_factory: Any, store: str
) -> None:
    # On RocksDB this also holds the agents to reading each record's own partition: the store reads the
    # current event's, and a batch holds several partitions' records (updates then merged onto nothing).
    stack: Stack = stack_factory(
        HERALD_WORKER_PORT=str(free_port()), HERALD_PARTITIONS=str(PARTITIONS), HERALD_STORE=store
    )
    changelog, written, stored = await write_changelog(stack)
    worker = stack.spawn("worker", "-l", "info", log_name="worker")
    # One partial update per user, sent while the worker starts and recovers: each must land on the
    # recovered profile, never under it.
    updates = [
        (f"u{i}".encode(), json.dumps({"user_id": f"u{i}", "locale": "de"}).encode()) for i in range(USERS)
    ]
    await send_all(stack.bootstrap, stack.topic("users"), updates)
    await wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", worker, timeout=120)
    assert "bulk table recovery" in stack.log("worker"), stack.log("worker")[-3000:]

    await wait_for_metric(stack, "herald_profiles_applied_total", USERS, timeout=120)
    records = await read_topic(stack.bootstrap, changelog, until=len(written) + USERS, timeout=30)
    # The newest record of each user: the merged profile the worker wrote after its update.
    merged: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.offset >= stored[record.partition]:
            merged[user_of(record.key)] = json.loads(record.value)
    wrong = {
        user: (profile.get("display_name"), profile.get("locale"))
        for user, profile in merged.items()
        if profile.get("display_name") != expected_name(int(user[1:])) or profile.get("locale") != "de"
    }
    assert len(merged) == USERS and not wrong, (len(merged), dict(list(wrong.items())[:10]))


async def test_a_cold_worker_on_rocksdb_stores_every_key_and_each_offset(
    stack_factory: Any,
) -> None:
    """Read from the stores' files after a clean stop: every live key with its latest value, no deleted key,
    and each partition's persisted offset at its last changelog record (a restart reads nothing again), also
    past the records the worker wrote itself (Faust's `send_changelog` callback notes that per record; the
    outbox produces the changelog with the batch API and notes it once per batch)."""
    stack: Stack = stack_factory(
        HERALD_WORKER_PORT=str(free_port()), HERALD_PARTITIONS=str(PARTITIONS), HERALD_STORE="rocksdb"
    )
    _, _, counts = await write_changelog(stack)
    worker = stack.spawn("worker", "-l", "info", log_name="worker")
    await wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", worker, timeout=120)
    assert "bulk table recovery" in stack.log("worker"), stack.log("worker")[-3000:]
    # Then one change each for a few users, which the worker writes to the changelog itself: twice, since a
    # partial update is followed on the users topic by the whole merged profile, which is applied in turn.
    changed = [f"u{i}" for i in range(0, USERS, 30)]
    await send_all(
        stack.bootstrap,
        stack.topic("users"),
        [
            (user.encode(), json.dumps({"user_id": user, "display_name": f"new {user}"}).encode())
            for user in changed
        ],
    )
    await wait_for_metric(stack, "herald_profiles_applied_total", 2 * len(changed), timeout=60)
    for user in changed:
        counts[home_partition(user, PARTITIONS)] += 2
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0

    tables = Path(stack.env["HERALD_DATA_DIR"]) / stack.env["HERALD_APP_ID"] / "v1" / "tables"
    names: dict[str, str | None] = {}
    offsets: dict[int, int] = {}
    for partition in range(PARTITIONS):
        db = Rdict(
            str(tables / f"users-{partition}.db"), Options(raw_mode=True), access_type=AccessType.read_only()
        )
        try:
            for key, value in db.items():
                if key == OFFSET_KEY:
                    offsets[partition] = int(cast(bytes, value))
                else:
                    names[user_of(cast(bytes, key))] = json.loads(value).get("display_name")
        finally:
            db.close()
    expected = {f"u{i}": expected_name(i) for i in range(USERS) if expected_name(i) is not None}
    expected.update({user: f"new {user}" for user in changed})
    assert names == expected, (len(names), len(expected))
    assert offsets == {p: count - 1 for p, count in counts.items()}
