"""Measurement (issue 15): in-app produce → socket at low load. InAppNotification records go to the in-app
topic (as the router writes them, on the user's home partition) at a fixed low rate; the worker's inbox
agent keeps each and writes its frame to the feed; the gateway forwards it; the clients note receive time
minus `data.sent_at`. The feed records' own timestamps (set by the worker's producer) split that into the
worker's hop (in-app topic → feed) and the gateway's (feed → socket)."""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from bench.feed_records import notification, notification_template
from bench.inapp_stack import InAppStack
from bench.observe import latency_summary
from bench.sizes import Sizes
from bench.workload import fast_producer, home_partition
from bench.ws_clients import ClientsProcess

RATE = 20.0  # notifications per second
USERS = 50  # sockets the notifications go to, one user each
GRACE_SECONDS = 10.0
FEED_READ_SECONDS = 20.0  # to read this run's records back off the feed


async def measure_inapp_latency(
    stack: InAppStack, clients: ClientsProcess, sizes: Sizes, tmp: Path
) -> dict[str, Any]:
    _, welcomed, _ = await clients.connect(USERS, "lat")
    await clients.dump(tmp / "inapp-before.json")  # start the count from zero
    total = int(RATE * sizes.inapp_latency_seconds)
    offered_seconds = await asyncio.to_thread(_produce, stack, total, sizes.partitions)
    received = await clients.wait(total, GRACE_SECONDS)
    seen = await clients.dump(tmp / "inapp-latency.json")
    worker_hop = await _feed_delays(stack, total)
    return {
        "rate_per_second": RATE,
        "sockets": welcomed,
        "offered": total,
        "offered_seconds": offered_seconds,
        "received": received,
        "latency": latency_summary(seen["latencies"]),
        # produce → the worker's feed record (its producer's timestamp): the rest is feed → socket.
        "worker_hop": latency_summary(worker_hop),
        "cdf_ms": sorted(x * 1000 for x in seen["latencies"]),
    }


def _produce(stack: InAppStack, total: int, partitions: int) -> float:
    template = notification_template()
    producer = fast_producer(stack.dep.bootstrap)
    began = time.monotonic()
    for seq in range(total):
        time.sleep(max(0.0, began + seq / RATE - time.monotonic()))
        user = f"lat{seq % USERS}"
        raw = notification(template, seq, user, time.time(), run="latency")
        producer.produce(stack.inapp, raw, user.encode(), partition=home_partition(user, partitions))
        producer.poll(0)
    producer.flush(30)
    return time.monotonic() - began


async def _feed_delays(stack: InAppStack, total: int) -> list[float]:
    """For each of this run's notifications on the feed: its record's timestamp minus `data.sent_at`."""
    consumer = AIOKafkaConsumer(
        stack.feed,
        bootstrap_servers=stack.dep.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    delays: dict[str, float] = {}
    try:
        deadline = time.monotonic() + FEED_READ_SECONDS
        while len(delays) < total and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    with suppress(ValueError, KeyError, TypeError):
                        frame = orjson.loads(record.value)
                        body = frame.get("notification", frame)
                        nid = str(body["notification_id"])
                        if nid.startswith("ntf_latency_"):
                            delays[nid] = record.timestamp / 1000 - body["data"]["sent_at"]
    finally:
        await consumer.stop()
    return list(delays.values())
