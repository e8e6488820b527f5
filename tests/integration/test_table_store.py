"""The worker's tables on RocksDB (HERALD_STORE=rocksdb, the default with an external Kafka), on the real
broker: a clean restart reads only the changelog records it does not have yet, a restart after kill -9 reads
the tables back from the changelogs, and either way every user is known after the restart."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from adapters.broker.embedded import free_port
from streams.runtime.stores import CLEAN_STOP_MARK
from tests.integration.stack import Stack, produce, read_topic, wait_for_metric, wait_ready
from tests.integration.test_directory import inapp_for, shipped

pytestmark = pytest.mark.integration

BEFORE = 40  # users stored before the first stop
AFTER = 20  # users added while the worker is stopped: the changelog's tail


def reading_starts(log: str, changelog: str) -> dict[int, int]:
    """The offsets Faust's recovery started reading `changelog` from, per partition (-1: from the start),
    as its "active offsets at start of reading" table gives them; empty if it read nothing of it."""
    starts: dict[int, int] = {}
    for line in log.splitlines():
        try:
            message = json.loads(line).get("message", "")
        except json.JSONDecodeError:
            continue
        if "active offsets at start of reading" not in message:
            continue
        topic = ""
        for row in message.splitlines():
            cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
            if len(cells) != 3 or not cells[1].isdigit():
                continue
            topic = topic if cells[0] == "〃" else cells[0]
            if topic == changelog:
                starts[int(cells[1])] = int(cells[2])
    return starts


async def add_users(stack: Stack, first: int, count: int) -> None:
    users = [f"u{i}" for i in range(first, first + count)]
    records = [(u.encode(), json.dumps({"user_id": u}).encode()) for u in users]
    await produce(stack.bootstrap, stack.topic("users"), records)


async def known(stack: Stack, user: str, event_id: str) -> bool:
    """Whether the worker routes an event to `user`: it finds the profile in its table (on RocksDB,
    `herald_table_keys` is RocksDB's estimate, which counts a rewritten key twice)."""
    await produce(stack.bootstrap, stack.topic("events"), [(user.encode(), shipped(event_id, user))])
    return len(await inapp_for(stack, user, 1)) == 1


async def test_a_clean_restart_reads_the_tail_and_a_crash_reads_it_all(stack_factory: Any) -> None:
    stack: Stack = stack_factory(HERALD_WORKER_PORT=str(free_port()), HERALD_STORE="rocksdb")
    readyz = f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz"
    tables = Path(stack.env["HERALD_DATA_DIR"]) / stack.env["HERALD_APP_ID"]
    changelog = f"{stack.env['HERALD_APP_ID']}-users-changelog"

    first = stack.spawn("worker", "-l", "info", log_name="worker-1")
    await wait_ready(readyz, first)
    await add_users(stack, 0, BEFORE)
    await wait_for_metric(stack, "herald_profiles_applied_total", BEFORE)
    first.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.wait, 30) == 0
    assert (tables / CLEAN_STOP_MARK).exists()
    written = await read_topic(stack.bootstrap, changelog, until=10 * BEFORE, timeout=3)
    last = {p: max(r.offset for r in written if r.partition == p) for p in {r.partition for r in written}}
    assert sum(1 for r in written if r.value) >= BEFORE

    await add_users(stack, BEFORE, AFTER)
    second = stack.spawn("worker", "-l", "info", log_name="worker-2")
    await wait_ready(readyz, second)
    assert not (tables / CLEAN_STOP_MARK).exists()  # a crash from here on must not look clean
    starts = reading_starts(stack.log("worker-2"), changelog)
    # Each partition's reading began after the last record it had read before the stop.
    assert starts == last, (starts, last)
    assert await known(stack, f"u{BEFORE + 3}", "e-1")  # from the tail read after the restart

    second.send_signal(signal.SIGKILL)
    await asyncio.to_thread(second.wait, 30)
    third = stack.spawn("worker", "-l", "info", log_name="worker-3")
    await wait_ready(readyz, third)
    log = stack.log("worker-3")
    assert "did not stop cleanly" in log
    starts = reading_starts(log, changelog)
    assert starts and all(offset == -1 for offset in starts.values()), starts
    assert await known(stack, "u5", "e-2")  # stored before the first stop: read back from the start
