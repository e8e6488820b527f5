"""Providers that fail 30 % of calls at random (timeouts, 429, 500) and one that is down for a stretch: every
notification is delivered (retries, failover) or dead-lettered, none twice, and retries keep their backoff."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from schemas.status import DeliveryStatus
from tests.reliability.harness import RETRY_ENV, Deployment, Outputs
from tests.reliability.invariants import check, expected_notifications

EVENTS = 400
USERS = 40
BASE = float(RETRY_ENV["HERALD_RETRY_BASE_DELAY_SECONDS"])
MULTIPLIER = float(RETRY_ENV["HERALD_RETRY_MULTIPLIER"])
JITTER = float(RETRY_ENV["HERALD_RETRY_JITTER"])
MAX_ATTEMPTS = int(RETRY_ENV["HERALD_RETRY_MAX_ATTEMPTS"])
TWILIO_DOWN_SECONDS = 6.0


def backoff_violations(statuses: list[DeliveryStatus]) -> list[str]:
    """Attempt k+1 must start no earlier than the backoff after attempt k ended (less the jitter)."""
    by_notification: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for status in statuses:
        if status.provider != "-":
            by_notification[status.notification_id][status.attempt].append(status.at.timestamp())
    found = []
    for nid, attempts in by_notification.items():
        for attempt in sorted(attempts):
            if attempt + 1 not in attempts:
                continue
            gap = min(attempts[attempt + 1]) - max(attempts[attempt])
            floor = BASE * MULTIPLIER ** (attempt - 1) * (1 - JITTER) - 0.05
            if gap < floor:
                found.append(f"{nid} attempt {attempt}->{attempt + 1}: {gap:.3f} s < {floor:.3f} s")
    return found


async def test_random_faults_and_an_outage_end_delivered_or_dead_lettered(
    deployment: Deployment, report: Any
) -> None:
    providers = deployment.providers
    deployment.stack.extra_env.update(
        providers.env() | {"HERALD_CIRCUIT_COOLDOWN_SECONDS": "2", "HERALD_CIRCUIT_FAILURE_THRESHOLD": "5"}
    )
    await deployment.start_worker("worker-1")
    users = deployment.users(USERS)
    await deployment.add_users(users, "worker-1")
    events = [
        deployment.event("security.login" if n % 2 else "order.shipped", users[n % USERS]["user_id"])
        for n in range(EVENTS)
    ]
    expected = expected_notifications(events, deployment.profiles)
    outputs = Outputs(deployment)
    for seed, fake in enumerate(providers.http_fakes()):
        fake.faults.rate, fake.faults.seed = 0.3, seed
        fake.faults.__post_init__()
    providers.twilio.faults.down = True
    started = time.monotonic()
    await deployment.publish(events)

    async def end_outage() -> None:
        if providers.twilio.faults.down and time.monotonic() - started > TWILIO_DOWN_SECONDS:
            providers.twilio.faults.down = False

    observed = await outputs.settle(expected, timeout=150, progress=end_outage)
    providers.twilio.faults.down = False
    await outputs.close()

    figures = check("provider faults", len(events), expected, observed)
    figures.faults_injected = providers.faults_injected()
    calls: dict[str, int] = defaultdict(int)
    for status in observed.statuses:
        if status.provider != "-":
            calls[status.notification_id] += 1
    attempts = [s.attempt for s in observed.statuses]
    violations = backoff_violations(observed.statuses)
    figures.notes = {
        "provider_calls": sum(calls.values()),
        "max_calls_per_notification": max(calls.values()),
        "max_attempt": max(attempts),
        "retried_notifications": len({s.notification_id for s in observed.statuses if s.attempt > 1}),
        "backoff_violations": len(violations),
        "delivered_by": dict(
            sorted(
                {
                    p: sum(1 for s in observed.statuses if s.outcome == "delivered" and s.provider == p)
                    for p in {s.provider for s in observed.statuses}
                }.items()
            )
        ),
        "seconds": round(time.monotonic() - started, 1),
    }
    report(figures)
    assert not figures.problems(), figures.problems()
    assert sum(figures.faults_injected.values()) > EVENTS // 4
    # No hot loop: at most every provider of a channel, once per attempt; and the backoff holds.
    assert max(attempts) <= MAX_ATTEMPTS
    assert max(calls.values()) <= MAX_ATTEMPTS * 2
    assert not violations, violations[:5]
    await asyncio.sleep(0)
