"""A gateway process with connected clients is stopped (SIGTERM: clients get 1001), notifications keep coming
while it is down, a new process starts on the same port, and the clients reconnect with `?since=`: each
receives exactly what it missed, in order, then live ones; nothing missed, nothing twice."""

from __future__ import annotations

import time
from typing import Any

from schemas.channels import Channel
from tests.reliability import profiles
from tests.reliability.gateway_process import start_gateway, token
from tests.reliability.harness import Deployment, Outputs
from tests.reliability.invariants import check, expected_notifications
from tests.reliability.ws_clients import Listener, wait_for

USERS = 6
PER_PHASE = 8  # events per user before the restart, while the gateway is down, and after


async def test_clients_recover_exactly_what_they_missed_across_a_gateway_restart(
    deployment: Deployment, report: Any
) -> None:
    deployment.stack.extra_env.update(deployment.providers.env(email=False, sms=False, push=False))
    await deployment.start_worker("worker-1")
    gateway = await start_gateway(deployment, "gateway")
    users = profiles.users(deployment, USERS)
    await deployment.add_users(users, "worker-1")
    ids = [u["user_id"] for u in users]
    started = time.monotonic()
    listeners = {u: Listener(u) for u in ids}
    for user, listener in listeners.items():
        await listener.open(gateway.ws_url, token(user))
    outputs = Outputs(deployment)
    phases: list[list[dict[str, Any]]] = []

    def inapp_ids(events: list[dict[str, Any]], user: str) -> list[str]:
        expected = expected_notifications(
            [e for e in events if e["recipients"] == [user]], deployment.profiles
        )
        return [nid for nid, e in expected.items() if e.channel is Channel.INAPP]

    async def publish_phase() -> list[dict[str, Any]]:
        events = [deployment.event("order.shipped", u) for _ in range(PER_PHASE) for u in ids]
        phases.append(events)
        await deployment.publish(events)
        return events

    before = await publish_phase()
    for listener in listeners.values():
        await wait_for(lambda x=listener: len(x.notification_ids()) == PER_PHASE, timeout=60)
    last_seen = {user: listener.last_notification_id() for user, listener in listeners.items()}

    # uvicorn re-raises SIGTERM once its graceful shutdown is done, so the exit status is the signal.
    assert gateway.terminate() in (0, -15)
    closes = {user: await listener.closed() for user, listener in listeners.items()}
    down = await publish_phase()
    # Wait until the worker put every missed notification on the in-app topic, so they are all "missed".
    expected_down = expected_notifications(down, deployment.profiles)
    await outputs.settle({n: e for n, e in expected_down.items() if e.channel is Channel.INAPP}, quiet=0.5)

    restarted = await start_gateway(deployment, "gateway.2", port=gateway.port)
    welcomes = {}
    for user, listener in listeners.items():
        welcomes[user] = await listener.open(restarted.ws_url, token(user), since=last_seen[user])
    after = await publish_phase()
    all_events = before + down + after
    for listener in listeners.values():
        await wait_for(lambda x=listener: len(x.notification_ids()) >= 3 * PER_PHASE, timeout=60)
    expected = expected_notifications(all_events, deployment.profiles)
    observed = await outputs.settle(expected, timeout=60)
    await outputs.close()
    for listener in listeners.values():
        await listener.stop()

    wrong: dict[str, Any] = {}
    for user, listener in listeners.items():
        got = listener.notification_ids()
        want = inapp_ids(before, user) + inapp_ids(down, user) + inapp_ids(after, user)
        if got != want:
            wrong[user] = {"got": len(got), "want": len(want), "distinct": len(set(got))}
    received = sum(len(listener.notification_ids()) for listener in listeners.values())
    distinct = sum(len(set(listener.notification_ids())) for listener in listeners.values())
    figures = check("gateway restart (SIGTERM)", len(all_events), expected, observed)
    figures.faults_injected = {"sigterm": 1}
    figures.notes = {
        "clients": USERS,
        "closes": sorted({str(c) for c in closes.values()}),
        "recovered": sum(1 for w in welcomes.values() if w.get("recovered") is True),
        "missed_per_client": sorted({w.get("missed") for w in welcomes.values()}),
        "client_frames": received,
        "client_duplicates": received - distinct,
        "client_missing": USERS * 3 * PER_PHASE - distinct,
        "seconds": round(time.monotonic() - started, 1),
    }
    report(figures)
    assert set(closes.values()) <= {(1001, "going_away"), (1001, "draining")}, closes
    assert all(w.get("recovered") is True and w.get("missed") == PER_PHASE for w in welcomes.values()), (
        welcomes
    )
    assert not wrong, wrong
    assert not figures.problems(), figures.problems()
