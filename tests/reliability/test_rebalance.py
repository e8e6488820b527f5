"""Three workers share the partitions; mid-stream one leaves (SIGTERM) and another joins: nothing is lost
and nothing reaches a person twice."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.reliability.harness import Deployment, Outputs
from tests.reliability.invariants import check, expected_notifications

EVENTS = 1200
USERS = 60


async def test_one_worker_leaves_and_one_joins_mid_stream(deployment: Deployment, report: Any) -> None:
    deployment.stack.extra_env.update(deployment.providers.env(email=False, sms=False, push=False))
    deployment.stack.extra_env["HERALD_PARTITIONS"] = "6"
    await asyncio.gather(*(deployment.start_worker(f"worker-{n}") for n in (1, 2, 3)))
    users = deployment.users(USERS)
    await deployment.add_users(users, "worker-1", "worker-2", "worker-3")
    events = [deployment.event("order.shipped", users[n % USERS]["user_id"]) for n in range(EVENTS)]
    expected = expected_notifications(events, deployment.profiles)
    outputs = Outputs(deployment)
    started = time.monotonic()
    await deployment.publish(events[: EVENTS // 2])

    smtp, first = deployment.providers.smtp, outputs.since["smtp"]
    for _ in range(400):
        if len(smtp.messages) - first >= EVENTS // 6:
            break
        await asyncio.sleep(0.05)
    at_leave = len(smtp.messages) - first
    deployment.terminate("worker-2")
    joining = asyncio.create_task(deployment.start_worker("worker-4"))
    await deployment.publish(events[EVENTS // 2 :])
    await joining
    observed = await outputs.settle(expected, timeout=150)
    await outputs.close()

    figures = check("rebalance (3 workers, -1 +1)", len(events), expected, observed)
    figures.faults_injected = {"sigterm_leave": 1, "join": 1}
    figures.notes = {"emails_before_leave": at_leave, "seconds": round(time.monotonic() - started, 1)}
    report(figures)
    assert not figures.problems(), figures.problems()
