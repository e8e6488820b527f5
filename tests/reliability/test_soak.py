"""Sustained traffic through a worker and a gateway with connected clients for about a minute: every
notification arrives (provider, in-app topic and each client, once), the worker's tables and the gateway's
inboxes stay within their configured retention, and neither process's resident memory keeps growing."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.channels import Channel
from tests.reliability import profiles
from tests.reliability.gateway_process import rss_bytes, start_gateway, token
from tests.reliability.harness import Deployment, Outputs
from tests.reliability.invariants import check, expected_notifications
from tests.reliability.ws_clients import Listener, wait_for

USERS = 20
RATE = 20  # events per second, each an in-app notification and an email: 40 notifications per second
SECONDS = 55
SAMPLE_EVERY = 3.0
INBOX_SIZE = 10  # reached by every user after ~10 s, so the second half runs at full retention
# Delivered-ids entries live this long, and the sweep runs this often: the table holds at most about the
# last RETENTION + 2 * SWEEP seconds of email deliveries (one entry each, 20 a second).
DEDUP_RETENTION = 15
DEDUP_SWEEP = 2
DELIVERED_BOUND = RATE * (DEDUP_RETENTION + 2 * DEDUP_SWEEP)
MB = 1024 * 1024
# Once inboxes and dedup sets are full, the working set should be flat; what remains is allocator and
# client-buffer noise (a few MB). 25 MB (or 20 % of the mid-run RSS, whichever is larger) over the second
# half (~550 events) catches a leak of ~45 KB per event or more; finer leaks need the longer bench soak.
GROWTH_BOUND = 25 * MB
GROWTH_FRACTION = 0.20


async def test_a_minute_of_sustained_traffic_keeps_memory_and_state_bounded(
    deployment: Deployment, report: Any
) -> None:
    deployment.stack.extra_env.update(
        deployment.providers.env(email=False, sms=False, push=False)
        | {
            "HERALD_DEDUP_RETENTION_SECONDS": str(DEDUP_RETENTION),
            "HERALD_DEDUP_SWEEP_SECONDS": str(DEDUP_SWEEP),
            "HERALD_INBOX_SIZE": str(INBOX_SIZE),
        }
    )
    worker = await deployment.start_worker("worker-1")
    gateway = await start_gateway(deployment)
    users = profiles.users(deployment, USERS)
    await deployment.add_users(users, "worker-1")
    ids = [u["user_id"] for u in users]
    listeners = {u: Listener(u) for u in ids}
    for user, listener in listeners.items():
        await listener.open(gateway.ws_url, token(user))
    outputs = Outputs(deployment)
    samples: list[tuple[float, int, int]] = []
    events: list[dict[str, Any]] = []
    started = time.monotonic()

    async def sample() -> None:
        while True:
            samples.append((time.monotonic() - started, rss_bytes(worker.pid), gateway.rss()))
            await asyncio.sleep(SAMPLE_EVERY)

    sampler = asyncio.create_task(sample())
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        per_tick = RATE // 4  # every quarter of a second
        n = 0
        while time.monotonic() - started < SECONDS:
            batch = [deployment.event("order.shipped", ids[(n + k) % USERS]) for k in range(per_tick)]
            n += per_tick
            events += batch
            futures = [
                await producer.send(
                    deployment.stack.topic("events"),
                    key=e["recipients"][0].encode(),
                    value=json.dumps(e).encode(),
                )
                for e in batch
            ]
            await asyncio.gather(*futures)
            await asyncio.sleep(max(0.0, started + n / RATE - time.monotonic()))
    finally:
        await producer.stop()
    produced_for = time.monotonic() - started
    expected = expected_notifications(events, deployment.profiles)
    observed = await outputs.settle(expected, timeout=60)
    await outputs.close()
    inapp = {
        u: [nid for nid, e in expected.items() if e.channel is Channel.INAPP and e.recipient == u]
        for u in ids
    }
    for user, listener in listeners.items():
        want = len(inapp[user])
        await wait_for(lambda x=listener, n=want: len(x.notification_ids()) >= n, timeout=30)
    sampler.cancel()
    samples.append((time.monotonic() - started, rss_bytes(worker.pid), gateway.rss()))
    for listener in listeners.values():
        await listener.stop()

    worker_metrics = await deployment.metrics_text("worker-1")
    tables = {
        line.split('"')[1]: float(line.split()[-1])
        for line in worker_metrics.splitlines()
        if line.startswith("herald_table_keys{")
    }
    expired = next(
        (
            float(line.split()[-1])
            for line in worker_metrics.splitlines()
            if line.startswith("herald_dedup_entries_expired_total ")
        ),
        0.0,
    )
    # The inbox table holds an index per user and one entry per kept notification.
    inbox_entries = tables.get("inbox", 0) - USERS
    pushed = await gateway.metric("herald_gateway_messages_pushed_total")
    client_wrong = {
        u: len(listeners[u].notification_ids()) for u in ids if listeners[u].notification_ids() != inapp[u]
    }
    half = [s for s in samples if s[0] >= SECONDS / 2]
    growth = {}
    for index, name in ((1, "worker"), (2, "gateway")):
        mid = half[0][index]
        growth[name] = (mid, max(s[index] for s in half) - mid)

    figures = check("soak (~1 min, worker + gateway)", len(events), expected, observed)
    figures.notes = {
        "seconds_of_traffic": round(produced_for, 1),
        "events_per_second": round(len(events) / produced_for, 1),
        "clients": USERS,
        "client_notifications": sum(len(listener.notification_ids()) for listener in listeners.values()),
        "clients_wrong": client_wrong,
        "gateway_pushed": pushed,
        "table_keys": tables,
        "delivered_bound": DELIVERED_BOUND,
        "dedup_entries_expired": expired,
        "inbox_entries": inbox_entries,
        "inbox_bound": INBOX_SIZE * USERS,
        "rss_mb": {
            name: {
                "start": round(samples[0][index] / MB, 1),
                "mid": round(growth[name][0] / MB, 1),
                "end": round(samples[-1][index] / MB, 1),
                "second_half_growth": round(growth[name][1] / MB, 1),
            }
            for index, name in ((1, "worker"), (2, "gateway"))
        },
        "samples": len(samples),
    }
    report(figures)
    assert not figures.problems(), figures.problems()
    assert not client_wrong, (
        f"clients whose notifications were not exactly theirs, once, in order: {client_wrong}"
    )
    # One entry per delivery, kept for the retention: the sweep deleted the older ones, on the changelog too.
    assert tables and tables.get("delivered", 0) <= DELIVERED_BOUND, tables
    assert expired > 0, "the delivered-ids sweep never deleted an entry"
    assert all(keys <= USERS for name, keys in tables.items() if name not in ("delivered", "inbox")), tables
    assert inbox_entries <= INBOX_SIZE * USERS, inbox_entries
    for name, (mid, grew) in growth.items():
        assert grew <= max(GROWTH_BOUND, GROWTH_FRACTION * mid), (
            f"{name} RSS grew {grew / MB:.1f} MB over the second half (from {mid / MB:.1f} MB)"
        )
