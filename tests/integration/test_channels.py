"""Push, SMS and email through the worker and the real SDKs, against local servers speaking each provider's
protocol: failover, token hygiene, and a slow provider that does not hold back the other channels."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.broker.embedded import free_port
from adapters.email.sink import SmtpSink
from schemas.status import DeliveryStatus
from schemas.users import UserProfile
from tests.fakes.fcm import FakeFcm, fcm_error, make_service_account
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.sns import FakeSns, sns_error
from tests.fakes.twilio import FakeTwilio, twilio_error
from tests.integration.stack import Stack, herald, produce, read_topic, wait_for_metric, wait_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    with FakeTwilio() as twilio, FakeSns() as sns, FakeFcm("herald-test") as fcm, FakeSendGrid() as sendgrid:
        yield {"twilio": twilio, "sns": sns, "fcm": fcm, "sendgrid": sendgrid}


@pytest.fixture(scope="module")
def worker(stack_factory: Any, fakes: dict[str, Any], smtp_server: SmtpSink, tmp_path_factory: Any) -> Stack:
    account, public_key = make_service_account(fakes["fcm"].token_uri, "herald-test")
    fakes["fcm"].public_key = public_key
    key_file = Path(tmp_path_factory.mktemp("fcm")) / "service-account.json"
    key_file.write_text(json.dumps(account))
    host, port = smtp_server.address
    stack: Stack = stack_factory(
        HERALD_WORKER_PORT=str(free_port()),
        HERALD_SMTP_HOST=host,
        HERALD_SMTP_PORT=str(port),
        HERALD_SENDGRID_API_KEY=fakes["sendgrid"].api_key,
        HERALD_SENDGRID_BASE_URL=fakes["sendgrid"].url,
        HERALD_SENDGRID_TIMEOUT_SECONDS="1.5",
        HERALD_TWILIO_ACCOUNT_SID=fakes["twilio"].account_sid,
        HERALD_TWILIO_AUTH_TOKEN=fakes["twilio"].auth_token,
        HERALD_TWILIO_FROM="+15550000000",
        HERALD_TWILIO_BASE_URL=fakes["twilio"].url,
        HERALD_SNS_REGION="us-east-1",
        HERALD_SNS_ENDPOINT_URL=fakes["sns"].url,
        HERALD_SNS_ACCESS_KEY_ID="testing",
        HERALD_SNS_SECRET_ACCESS_KEY="testing",
        HERALD_FCM_SERVICE_ACCOUNT_FILE=str(key_file),
        HERALD_FCM_BASE_URL=fakes["fcm"].url,
        HERALD_RETRY_BASE_DELAY_SECONDS="0.3",
        HERALD_RETRY_JITTER="0",
    )
    process = stack.spawn("worker", "-l", "info", log_name="worker")
    asyncio.run(wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", process))
    return stack


async def add_user(stack: Stack, user_id: str, phone: str, tokens: list[str]) -> None:
    profile = {
        "user_id": user_id,
        "email": f"{user_id}@example.com",
        "phone": phone,
        "devices": [{"token": t, "platform": "android"} for t in tokens],
    }
    before = await metric(stack, "herald_profiles_applied_total")
    await produce(stack.bootstrap, stack.topic("users"), [(user_id.encode(), json.dumps(profile).encode())])
    await wait_for_metric(stack, "herald_profiles_applied_total", before + 1)


async def metric(stack: Stack, sample: str) -> float:
    import httpx

    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/metrics")).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


async def login(stack: Stack, event_id: str, user_id: str) -> None:
    event = {
        "event_id": event_id,
        "type": "security.login",
        "occurred_at": "2026-11-24T10:00:00Z",
        "recipients": [user_id],
        "data": {"device": "Firefox on Linux", "city": "Lyon"},
    }
    await produce(stack.bootstrap, stack.topic("events"), [(user_id.encode(), json.dumps(event).encode())])


async def statuses_of(stack: Stack, user_id: str, until: Any, timeout: float = 30) -> list[DeliveryStatus]:
    found: list[DeliveryStatus] = []
    for _ in range(int(timeout)):
        records = await read_topic(stack.bootstrap, stack.topic("status"), until=100_000, timeout=1)
        found = [DeliveryStatus.model_validate_json(r.value) for r in records]
        found = [s for s in found if s.recipient == user_id]
        if until(found):
            break
    return found


def delivered(channel: str) -> Any:
    return lambda found: any(s.channel == channel and s.outcome == "delivered" for s in found)


async def latest_profile(stack: Stack, user_id: str) -> UserProfile:
    records = await read_topic(stack.bootstrap, stack.topic("users"), until=100_000, timeout=2)
    mine = [r for r in records if r.key == user_id.encode()]
    return UserProfile.model_validate_json(mine[-1].value)


async def test_sms_fails_over_to_sns_when_twilio_is_down(worker: Stack, fakes: dict[str, Any]) -> None:
    await add_user(worker, "sam", "+33612345678", [])
    fakes["twilio"].fail_next(twilio_error(503, 20500, "Service unavailable"), times=1)
    await login(worker, "login-sam", "sam")
    found = await statuses_of(worker, "sam", delivered("sms"))
    sms = [(s.provider, s.outcome.value) for s in found if s.channel == "sms"]
    assert sms == [("twilio", "failed"), ("sns", "delivered")]
    [publish] = [p for p in fakes["sns"].publishes if p.form().get("PhoneNumber") == "+33612345678"]
    assert "Firefox on Linux in Lyon" in publish.form()["Message"]


async def test_unregistered_push_token_is_removed_from_the_profile(
    worker: Stack, fakes: dict[str, Any]
) -> None:
    await add_user(worker, "pia", "+33600000001", ["pia-phone-token", "pia-old-tablet"])
    fakes["fcm"].refuse("pia-old-tablet", fcm_error("UNREGISTERED", "Requested entity was not found."))
    await login(worker, "login-pia-1", "pia")
    found = await statuses_of(worker, "pia", delivered("push"))
    assert [s.outcome.value for s in found if s.channel == "push"] == ["delivered"]
    for _ in range(30):
        profile = await latest_profile(worker, "pia")
        if len(profile.devices) == 1:
            break
    assert [d.token for d in profile.devices] == ["pia-phone-token"]

    # The removed token is never tried again.
    await wait_for_metric(
        worker, "herald_profiles_applied_total", await metric(worker, "herald_profiles_applied_total")
    )
    sent_before = len(fakes["fcm"].sends)
    await login(worker, "login-pia-2", "pia")
    await statuses_of(
        worker, "pia", lambda f: sum(1 for s in f if s.channel == "push" and s.outcome == "delivered") >= 2
    )
    targets = [r.json()["message"].get("token") for r in fakes["fcm"].sends[sent_before:]]
    assert targets == ["pia-phone-token"]


async def test_unsubscribed_number_is_removed(worker: Stack, fakes: dict[str, Any]) -> None:
    await add_user(worker, "uma", "+33600000002", [])
    fakes["twilio"].fail_next(twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"), times=1)
    await login(worker, "login-uma", "uma")
    found = await statuses_of(
        worker, "uma", lambda f: any(s.channel == "sms" and s.outcome == "dead_lettered" for s in f)
    )
    assert [s.reason for s in found if s.channel == "sms"] == ["unsubscribed", "unsubscribed"]
    for _ in range(30):
        profile = await latest_profile(worker, "uma")
        if profile.phone is None:
            break
    assert profile.phone is None


async def test_slow_email_provider_does_not_delay_sms_or_push(worker: Stack, fakes: dict[str, Any]) -> None:
    await add_user(worker, "tom", "+33600000003", ["tom-phone-token"])
    fakes["sendgrid"].hang_next(times=1, seconds=5)
    await login(worker, "login-tom", "tom")
    found = await statuses_of(worker, "tom", delivered("email"))
    by_channel = {(s.channel.value, s.provider, s.outcome.value): s.at for s in found}
    sms_done = by_channel[("sms", "twilio", "delivered")]
    push_done = by_channel[("push", "fcm", "delivered")]
    email_timeout = by_channel[("email", "sendgrid", "failed")]
    # SMS and push were delivered while SendGrid was still hanging; email then failed over to SMTP.
    assert sms_done < email_timeout and push_done < email_timeout
    assert ("email", "smtp", "delivered") in by_channel


async def test_the_trace_of_a_real_run_shows_the_failover_and_the_retry_in_order(
    worker: Stack, fakes: dict[str, Any]
) -> None:
    """`herald trace` on what a worker wrote, not on records made up: the first attempt fails on both SMS
    providers (failover, then a retry), the second fails over again and goes out through SNS."""
    await add_user(worker, "tia", "+33612345670", [])
    fakes["twilio"].fail_next(twilio_error(503, 20500, "Service unavailable"), times=2)
    fakes["sns"].fail_next(sns_error(500, "InternalError"), times=1)
    await login(worker, "login-tia", "tia")
    found = await statuses_of(worker, "tia", delivered("sms"))
    sms = [(s.provider, s.outcome.value, s.attempt) for s in found if s.channel == "sms"]
    assert sms == [
        ("twilio", "failed", 1),
        ("sns", "failed", 1),
        ("twilio", "failed", 2),
        ("sns", "delivered", 2),
    ]

    result = await asyncio.to_thread(herald, worker, "trace", "login-tia", "--json")
    assert result.returncode == 0, result.stderr
    traced = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    journey = [(t["provider"], t["outcome"], t["attempt"]) for t in traced if t["channel"] == "sms"]
    assert journey == sms
    table = await asyncio.to_thread(herald, worker, "trace", "login-tia")
    assert table.returncode == 0, table.stderr
    # The readable table: [date, time, recipient, channel, provider, outcome, attempt, …], in time order.
    rows = [line.split() for line in table.stdout.splitlines()[1:] if line.strip()]
    assert [tuple(row[4:7]) for row in rows if row[3] == "sms"] == [
        (provider, outcome, str(attempt)) for provider, outcome, attempt in sms
    ], table.stdout
