"""A worker killed with SIGKILL in the middle of a stream, then restarted: nothing is lost, and any
duplicate at a provider is one the crash caught between the provider's acceptance and Herald's record."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from schemas.status import Outcome
from tests.reliability.harness import Deployment, Outputs
from tests.reliability.invariants import check, expected_notifications

EVENTS = 1500
USERS = 60


async def test_kill_9_mid_stream_then_restart_loses_nothing(deployment: Deployment, report: Any) -> None:
    deployment.stack.extra_env.update(deployment.providers.env())
    await deployment.start_worker("worker-1")
    users = deployment.users(USERS)
    await deployment.add_users(users, "worker-1")
    events = [
        deployment.event("security.login" if n % 10 == 0 else "order.shipped", users[n % USERS]["user_id"])
        for n in range(EVENTS)
    ]
    expected = expected_notifications(events, deployment.profiles)
    outputs = Outputs(deployment)
    started = time.monotonic()
    await deployment.publish(events)

    # Kill once about a sixth of the provider deliveries were made: routing, delivery, commits under way.
    providers = deployment.providers
    for _ in range(600):
        if sum(providers.mark().values()) - sum(outputs.since.values()) >= EVENTS // 3:
            break
        await asyncio.sleep(0.05)
    delivered_at_kill = sum(providers.mark().values()) - sum(outputs.since.values())
    killed_at = datetime.now(UTC)
    deployment.kill("worker-1")
    await deployment.start_worker("worker-1")
    observed = await outputs.settle(expected, timeout=150)
    await outputs.close()

    figures = check("worker kill -9", len(events), expected, observed, crash_window=True)
    figures.faults_injected = {"sigkill": 1}
    figures.notes = {
        "provider_deliveries_before_kill": delivered_at_kill,
        "seconds": round(time.monotonic() - started, 1),
    }
    # For each duplicate Herald had recorded before the crash: how long before the kill it was recorded.
    first_record: dict[str, datetime] = {}
    for status in observed.statuses:
        if status.outcome == Outcome.DELIVERED:
            first_record.setdefault(status.notification_id, status.at)
    recorded_then_resent = sorted(
        round((killed_at - first_record[nid]).total_seconds(), 2)
        for nid, n in observed.deliveries.items()
        if n > 1
        and nid in first_record
        and first_record[nid] < killed_at
        and sum(1 for s in observed.statuses if s.notification_id == nid and s.outcome == Outcome.DELIVERED)
        >= n
    )
    figures.notes["recorded_then_resent_seconds_before_kill"] = (
        [
            recorded_then_resent[0],
            recorded_then_resent[len(recorded_then_resent) // 2],
            recorded_then_resent[-1],
        ]
        if recorded_then_resent
        else []
    )
    report(figures)
    assert not figures.problems(), figures.problems()
