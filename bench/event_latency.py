"""Measurement (issue 13): a domain event → its recipient's socket at low load, the whole way through Herald:
intake, routing, the inbox, the feed and the gateway. Events of a type whose one rule sends in-app only,
keyed by their recipient as a service would key them, at 20 a second to the sockets bench.inapp_latency
opened; the rule lists `sent_at` as public, so the notification carries the stamp the clients read."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.inapp_stack import InAppStack
from bench.observe import latency_summary
from bench.workload import event, fast_producer
from bench.ws_clients import ClientsProcess
from schemas.users import UserProfile

RATE = 20.0  # events per second
EVENT_TYPE = "bench.inapp"
RULES = f"""rules:
  - match: {EVENT_TYPE}
    category: bench
    public: [seq, sent_at]
    channels:
      inapp: {{template: bench_inapp}}
"""
TEMPLATES = {"inapp/title.j2": "Hello {{ recipient.name }}", "inapp/body.j2": "bench {{ data.seq }}"}
WARM_SECONDS = 30.0  # for every recipient's profile to reach the worker's table, checked by one event each
GRACE_SECONDS = 10.0


def rules_env(directory: Path) -> dict[str, str]:
    """The worker's rules and templates for these events (HERALD_RULES_FILE, HERALD_TEMPLATES_DIR)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.yaml").write_text(RULES)
    for name, text in TEMPLATES.items():
        path = directory / "templates" / "bench_inapp" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {
        "HERALD_RULES_FILE": str(directory / "rules.yaml"),
        "HERALD_TEMPLATES_DIR": str(directory / "templates"),
    }


async def measure_event_latency(
    stack: InAppStack, clients: ClientsProcess, users: list[str], seconds: float, tmp: Path
) -> dict[str, Any]:
    """`users` are connected already. Their profiles go to the users topic first; one event each, until all
    arrived, shows the worker has them (and warms every partition's path); then the measured run."""
    await asyncio.to_thread(_profiles, stack, users)
    await clients.dump(tmp / "event-before.json")
    await asyncio.to_thread(_events, stack, users, len(users), "warm", RATE * 5)
    warmed = await clients.wait(len(users), WARM_SECONDS)
    await clients.dump(tmp / "event-warm.json")
    total = int(RATE * seconds)
    offered_seconds = await asyncio.to_thread(_events, stack, users, total, "latency", RATE)
    received = await clients.wait(total, GRACE_SECONDS)
    seen = await clients.dump(tmp / "event-latency.json")
    return {
        "rate_per_second": RATE,
        "sockets": len(users),
        "warmed": warmed,
        "offered": total,
        "offered_seconds": offered_seconds,
        "received": received,
        "latency": latency_summary(seen["latencies"]),
        "cdf_ms": sorted(x * 1000 for x in seen["latencies"]),
    }


def _profiles(stack: InAppStack, users: list[str]) -> None:
    producer = fast_producer(stack.dep.bootstrap)
    for user in users:
        profile = UserProfile(user_id=user, display_name=f"User {user}", email=f"{user}@bench.example.com")
        producer.produce(f"{stack.dep.prefix}.users", profile.to_json(), user.encode())
    producer.flush(30)


def _events(stack: InAppStack, users: list[str], total: int, run: str, rate: float) -> float:
    producer = fast_producer(stack.dep.bootstrap)
    topic = stack.dep.topic("events")
    began = time.monotonic()
    for seq in range(total):
        time.sleep(max(0.0, began + seq / rate - time.monotonic()))
        user = users[seq % len(users)]
        raw = event(seq, user, time.time(), f"{stack.dep.prefix}-{run}", EVENT_TYPE)
        producer.produce(topic, raw, user.encode())
        producer.poll(0)
    producer.flush(30)
    return time.monotonic() - began
