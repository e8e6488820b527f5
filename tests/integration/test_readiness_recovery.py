"""/readyz and the recovery metrics while a real worker recovers its tables from a long changelog, written to
the broker before the worker starts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from adapters.broker.embedded import free_port
from adapters.broker.topics import ensure_topics
from bench.workload import table_records
from kernel.topics import changelog_topic_name
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

# A profile and a preferences record each: 200,000 changelog records. The bulk recovery
# (streams.runtime.bulk_recovery) reads tens of thousands a second, so this is seconds of recovering, which
# polling five times a second sees many times over; faster polling only slows the worker down.
USERS = 100_000
PARTITIONS = 4
POLL = 0.2


async def write_changelogs(stack: Stack, users: int) -> int:
    app_id = stack.env["HERALD_APP_ID"]
    names = {table: changelog_topic_name(app_id, table) for table in ("users", "preferences")}
    await ensure_topics(stack.bootstrap, list(names.values()), PARTITIONS, 1, compacted=set(names.values()))
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    written = 0
    try:
        pending = []
        for table, partition, key, value in table_records(users, PARTITIONS):
            pending.append(await producer.send(names[table], value, key=key, partition=partition))
            written += 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return written


def gc_collections(text: str, generation: str) -> float | None:
    prefix = f'herald_gc_pause_seconds_count{{generation="{generation}"}} '
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix)), None)


def metric(text: str, name: str, table: str) -> float | None:
    prefix = f'{name}{{table="{table}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


async def test_readyz_says_recovering_with_records_left_then_ready(stack_factory: Any) -> None:
    stack: Stack = stack_factory(HERALD_WORKER_PORT=str(free_port()), HERALD_PARTITIONS=str(PARTITIONS))
    written = await write_changelogs(stack, USERS)
    process = stack.spawn("worker", "-l", "info", log_name="worker")
    base = f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}"
    answers: list[tuple[int, dict[str, Any]]] = []
    left_in_metrics: list[float] = []
    deadline = time.monotonic() + 90  # a bound on a stuck worker, not a figure the test checks
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = await client.get(f"{base}/readyz", timeout=2)
                metrics = (await client.get(f"{base}/metrics", timeout=2)).text
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
                continue
            answers.append((ready.status_code, ready.json()))
            left_in_metrics.append(metric(metrics, "herald_table_recovery_records_left", "users") or 0)
            if ready.status_code == 200:
                break
            await asyncio.sleep(POLL)
        assert answers and answers[-1] == (200, {"ready": True, "reason": "ready"}), (
            answers[-3:],
            stack.log("worker")[-3000:],
        )
        after = (await client.get(f"{base}/metrics", timeout=2)).text

    recovering = [body for status, body in answers if status == 503 and body["reason"] == "recovering"]
    progress = [body["recovery"] for body in recovering if body["recovery"]["records_left"] > 0]
    assert progress, f"no recovering answer with records left: {[body['reason'] for _, body in answers]}"
    for seen in progress:
        assert seen["records_left"] <= written
        assert seen["records_read"] + seen["records_left"] <= written
        assert set(seen["tables"]) <= {"users", "preferences", "delivered", "digests", "throttles", "inbox"}
        assert seen["partitions_left"] >= 1
    # Records left only fall: nothing writes to the changelogs meanwhile, and what was applied stays applied.
    lefts = [seen["records_left"] for seen in progress]
    assert lefts == sorted(lefts, reverse=True), lefts
    assert any(seen["records_read"] > 0 for seen in progress), "no progress seen while recovering"
    assert max(left_in_metrics) > 0, "the records-left gauge never showed the recovery"

    assert metric(after, "herald_table_recovery_records_left", "users") == 0
    recovered = sum(
        metric(after, "herald_table_recovery_records_total", table) or 0 for table in ("users", "preferences")
    )
    # Counted from the watch's first look at each partition: at most what was written, and most of it.
    assert written / 2 < recovered <= written, recovered
    # The tables read back are kept out of the collector's full walks from then on
    # (adapters.garbage_collector), after one full collection, which the pause histogram counts.
    assert "objects kept out of garbage collection" in stack.log("worker")
    assert (gc_collections(after, "2") or 0) >= 1, [
        line for line in after.splitlines() if "herald_gc" in line
    ]
    # The process's own figures, as the gateway's default registry has them (docs/METRICS.md).
    assert any(line.startswith("process_cpu_seconds_total ") for line in after.splitlines())
    assert any(line.startswith("process_resident_memory_bytes ") for line in after.splitlines())
