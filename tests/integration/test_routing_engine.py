"""The routing engine on the real broker: preferences, critical bypass, quiet hours released at the
window's end, digests, throttling, and recipient state surviving a worker restart."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.broker.embedded import free_port
from adapters.email.sink import SmtpSink
from schemas.status import DeliveryStatus
from tests.fakes.twilio import FakeTwilio
from tests.integration.stack import Stack, herald, produce, read_topic, wait_for_metric, wait_ready

pytestmark = pytest.mark.integration

RULES = """
rules:
  - match: promo.sent
    category: marketing
    channels:
      inapp: {template: order_update}
      email: {template: order_shipped}
  - match: security.login
    category: security
    channels:
      email: {template: security_login}
  - match: reminder.due
    category: reminders
    channels:
      sms: {template: security_login}
  - match: comment.added
    digest: {window: 3s}
    channels:
      inapp: {template: comment_digest}
  - match: chat.message
    throttle: {limit: 2, per: 1h}
    channels:
      inapp: {template: order_update}
"""


@pytest.fixture(scope="module")
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


def start_worker(stack: Stack) -> subprocess.Popen[bytes]:
    process = stack.spawn("worker", "-l", "info", log_name=f"worker-{len(stack.processes)}")
    asyncio.run(wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", process))
    return process


@pytest.fixture(scope="module")
def engine(stack_factory: Any, smtp_server: SmtpSink, twilio: FakeTwilio, tmp_path_factory: Any) -> Stack:
    host, port = smtp_server.address
    stack: Stack = stack_factory(
        HERALD_WORKER_PORT=str(free_port()),
        HERALD_SMTP_HOST=host,
        HERALD_SMTP_PORT=str(port),
        HERALD_TWILIO_ACCOUNT_SID=twilio.account_sid,
        HERALD_TWILIO_AUTH_TOKEN=twilio.auth_token,
        HERALD_TWILIO_FROM="+15550000000",
        HERALD_TWILIO_BASE_URL=twilio.url,
    )
    rules = Path(tmp_path_factory.mktemp("rules")) / "rules.yaml"
    rules.write_text(RULES)
    start_worker(stack)
    applied = herald(stack, "rules", "apply", str(rules))
    assert applied.returncode == 0, applied.stderr
    asyncio.run(wait_for_metric(stack, "herald_rules_offset", 0))
    users = [
        {"user_id": "ann", "email": "ann@example.com", "phone": "+33612345001"},
        {"user_id": "bo", "email": "bo@example.com", "phone": "+33612345002"},
        {"user_id": "cy", "email": "cy@example.com"},
    ]
    asyncio.run(
        produce(
            stack.bootstrap,
            stack.topic("users"),
            [(u["user_id"].encode(), json.dumps(u).encode()) for u in users],
        )
    )
    for args in (
        [
            "preferences",
            "set",
            "ann",
            "--opt-out",
            "marketing:email",
            "--opt-out",
            "security:email",
            "--mute",
        ],
    ):
        result = herald(stack, *args)
        assert result.returncode == 0, result.stderr
    asyncio.run(wait_for_metric(stack, "herald_preferences_applied_total", 1))
    return stack


def event(event_id: str, type_: str, user: str, **data: Any) -> tuple[bytes, bytes]:
    body = {"order_id": event_id, "carrier": "DHL", "items": [], "device": "Firefox", "city": "Lyon", **data}
    document = {
        "event_id": event_id,
        "type": type_,
        "occurred_at": datetime.now(UTC).isoformat(),
        "recipients": [user],
        "data": body,
    }
    return user.encode(), json.dumps(document).encode()


async def statuses(stack: Stack, user: str, until: Any, timeout: float = 30) -> list[DeliveryStatus]:
    found: list[DeliveryStatus] = []
    for _ in range(int(timeout)):
        records = await read_topic(stack.bootstrap, stack.topic("status"), until=100_000, timeout=1)
        found = [
            s for s in (DeliveryStatus.model_validate_json(r.value) for r in records) if s.recipient == user
        ]
        if until(found):
            break
    return found


async def inapp(stack: Stack, user: str, until: Any, timeout: float = 30) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for _ in range(int(timeout)):
        records = await read_topic(stack.bootstrap, stack.topic("deliver.inapp"), until=100_000, timeout=1)
        found = [json.loads(r.value) for r in records if r.key == user.encode()]
        if until(found):
            break
    return found


async def test_opt_out_and_mute_are_honoured(engine: Stack, smtp_server: SmtpSink) -> None:
    await produce(engine.bootstrap, engine.topic("events"), [event("promo-1", "promo.sent", "ann")])
    found = await statuses(engine, "ann", lambda f: any(s.event_id == "promo-1" for s in f))
    mine = {(s.channel.value, s.outcome.value, s.reason) for s in found if s.event_id == "promo-1"}
    assert ("email", "skipped", "muted") in mine or ("email", "skipped", "opted_out") in mine
    assert ("inapp", "skipped", "muted") in mine
    assert not [m for m in smtp_server.messages if m["To"] == "ann@example.com"]


async def test_critical_bypasses_mute_and_opt_out(engine: Stack, smtp_server: SmtpSink) -> None:
    await produce(engine.bootstrap, engine.topic("events"), [event("login-1", "security.login", "ann")])
    for _ in range(300):
        if [m for m in smtp_server.messages if m["To"] == "ann@example.com"]:
            break
        await asyncio.sleep(0.1)
    [mail] = [m for m in smtp_server.messages if m["To"] == "ann@example.com"]
    assert mail["Subject"] == "New sign-in from Firefox"


async def test_quiet_hours_defer_sms_to_the_end_of_the_window(engine: Stack, twilio: FakeTwilio) -> None:
    # A window around now that ends a few seconds from now, in bo's timezone (UTC): the test sets the clock.
    # Long enough for the preferences and then the event to be routed inside it on a loaded machine (with 4 s
    # the event was once routed after the window had ended, and so not deferred).
    now = datetime.now(UTC)
    end = (now + timedelta(seconds=9)).replace(microsecond=0) + timedelta(seconds=1)
    start = now - timedelta(minutes=10)
    day = start.strftime("%a").lower()
    result = herald(engine, "preferences", "set", "bo", "--quiet", f"{day}={start:%H:%M}-{end:%H:%M:%S}")
    if result.returncode != 0 and "HH:MM" in result.stderr:
        pytest.fail("quiet hours need second precision for this test: " + result.stderr)
    assert result.returncode == 0, result.stderr
    await wait_for_metric(engine, "herald_preferences_applied_total", 2)
    await produce(engine.bootstrap, engine.topic("events"), [event("rem-1", "reminder.due", "bo")])
    found = await statuses(
        engine, "bo", lambda f: any(s.channel == "sms" and s.outcome == "delivered" for s in f)
    )
    sms = [(s.outcome.value, s.reason) for s in found if s.channel == "sms"]
    assert sms[0] == ("deferred", "quiet_hours") and sms[-1][0] == "delivered"
    delivered_at = next(s.at for s in found if s.channel == "sms" and s.outcome == "delivered")
    assert delivered_at >= end
    assert [r.form()["To"] for r in twilio.sends] == ["+33612345002"]


async def test_digest_sends_n_events_as_one(engine: Stack) -> None:
    comments = [event(f"c-{n}", "comment.added", "cy", text=f"comment {n}") for n in range(4)]
    await produce(engine.bootstrap, engine.topic("events"), comments)
    found = await inapp(engine, "cy", lambda f: any(n["title"].endswith("comments") for n in f))
    digests = [n for n in found if n["title"].endswith("comments")]
    assert len(digests) == 1
    assert digests[0]["title"] == "4 new comments"
    assert digests[0]["body"] == "comment 0 | comment 1 | comment 2 | comment 3"


async def test_throttle_drops_the_excess(engine: Stack) -> None:
    chats = [event(f"chat-{n}", "chat.message", "cy") for n in range(4)]
    await produce(engine.bootstrap, engine.topic("events"), chats)
    found = await statuses(engine, "cy", lambda f: sum(1 for s in f if s.reason == "throttled") >= 2)
    assert sorted(s.event_id for s in found if s.reason == "throttled") == ["chat-2", "chat-3"]
    sent = await inapp(engine, "cy", lambda f: sum(1 for n in f if n["event_id"].startswith("chat-")) >= 2)
    assert sorted(n["event_id"] for n in sent if n["event_id"].startswith("chat-")) == ["chat-0", "chat-1"]


async def test_state_survives_a_worker_restart(engine: Stack) -> None:
    first = engine.processes[-1]
    first.terminate()
    first.wait(timeout=30)
    engine.extra_env["HERALD_DATA_DIR"] = str(Path(engine.env["HERALD_DATA_DIR"]) / "second")
    second = engine.spawn("worker", "-l", "info", log_name="worker-restarted")
    await wait_ready(f"http://127.0.0.1:{engine.env['HERALD_WORKER_PORT']}/readyz", second)
    # Profiles, preferences and throttle state come back from the changelogs.
    await produce(
        engine.bootstrap,
        engine.topic("events"),
        [event("promo-2", "promo.sent", "ann"), event("chat-9", "chat.message", "cy")],
    )
    found = await statuses(engine, "ann", lambda f: any(s.event_id == "promo-2" for s in f))
    assert ("inapp", "muted") in {(s.channel.value, s.reason) for s in found if s.event_id == "promo-2"}
    throttled = await statuses(engine, "cy", lambda f: any(s.event_id == "chat-9" for s in f))
    assert [s.reason for s in throttled if s.event_id == "chat-9"] == ["throttled"]
