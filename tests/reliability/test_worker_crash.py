"""A worker killed with SIGKILL in the middle of a stream, then restarted: nothing is lost, and any
duplicate at a provider is one the crash caught between the provider's acceptance and Herald's record."""

from __future__ import annotations

import asyncio
import time
from typing import Any

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

    # Kill once about a third of the emails went out: routing, delivery and commits are all under way.
    smtp = deployment.providers.smtp
    first = outputs.since["smtp"]
    for _ in range(600):
        if len(smtp.messages) - first >= EVENTS // 3:
            break
        await asyncio.sleep(0.05)
    delivered_at_kill = len(smtp.messages) - first
    deployment.kill("worker-1")
    await deployment.start_worker("worker-1")
    observed = await outputs.settle(expected, timeout=150)
    await outputs.close()

    figures = check("worker kill -9", len(events), expected, observed, crash_window=True)
    figures.faults_injected = {"sigkill": 1}
    figures.notes = {
        "emails_before_kill": delivered_at_kill,
        "seconds": round(time.monotonic() - started, 1),
    }
    report(figures)
    assert not figures.problems(), figures.problems()
