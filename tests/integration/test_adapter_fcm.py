"""FcmPushSender against a fake FCM v1 API and OAuth endpoint over loopback, through real firebase-admin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import firebase_admin
import pytest
from firebase_admin import credentials, messaging

from adapters.push import PushToken
from adapters.push.fcm import NOTIFICATION_ID_KEY, FcmPushSender
from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from schemas.events import Priority
from schemas.notifications import PushNotification
from schemas.users import Device, Platform, TokenKind
from tests.fakes.fcm import FakeFcm, fcm_error, make_service_account
from tests.fakes.http import Reply

pytestmark = pytest.mark.integration

PROJECT = "herald-test"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeFcm]:
    with FakeFcm(PROJECT) as server:
        yield server


@pytest.fixture(scope="module")
def service_account(fake: FakeFcm) -> dict[str, str]:
    account, public_key = make_service_account(fake.token_uri, PROJECT)
    fake.public_key = public_key
    return account


@pytest.fixture
async def sender(fake: FakeFcm, service_account: dict[str, str]) -> AsyncIterator[FcmPushSender]:
    adapter = FcmPushSender(service_account, base_url=fake.url, timeout=0.5)
    yield adapter
    await adapter.aclose()


def push(priority: Priority = Priority.NORMAL) -> PushNotification:
    now = datetime.now(UTC)
    return PushNotification(
        notification_id="ntf_fcm_1",
        event_id="evt-1",
        event_type="order.shipped",
        recipient="user-1",
        occurred_at=now,
        created_at=now,
        priority=priority,
        devices=[Device(token="from-the-profile", platform=Platform.ANDROID)],
        title="Shipped",
        body="Your order is on its way",
        data={"order": "42"},
    )


def fid(value: str) -> PushToken:
    return PushToken(value, TokenKind.FCM_FID)


async def test_a_send_reaches_each_token_with_a_verified_oauth_token(
    fake: FakeFcm, sender: FcmPushSender
) -> None:
    before = len(fake.sends)

    result = await sender.send(push(Priority.HIGH), [fid("device-a"), fid("device-b")])

    assert [o.delivered for o in result.outcomes] == [True, True]
    assert all(
        o.message_id and o.message_id.startswith(f"projects/{PROJECT}/messages/") for o in result.outcomes
    )
    assert fake.token_requests, "the access token came from the service account's token_uri"
    sends = fake.sends[before:]
    assert len(sends) == 2
    assert all(s.headers["authorization"].startswith("Bearer fake-access-") for s in sends)
    messages = sorted((s.json()["message"] for s in sends), key=lambda m: m["fid"])
    assert [m["fid"] for m in messages] == ["device-a", "device-b"]
    assert messages[0]["notification"] == {"title": "Shipped", "body": "Your order is on its way"}
    assert messages[0]["data"] == {"order": "42", NOTIFICATION_ID_KEY: "ntf_fcm_1"}
    assert messages[0]["android"] == {"priority": "high"}


async def test_three_tokens_in_one_call_report_the_unregistered_one_as_invalid(
    fake: FakeFcm, sender: FcmPushSender
) -> None:
    fake.refuse("gone-device", fcm_error("UNREGISTERED", "Requested entity was not found."))
    tokens = [fid("live-1"), fid("gone-device"), fid("live-2")]
    before = len(fake.sends)

    result = await sender.send(push(), tokens)

    assert len(fake.sends) - before == 3
    assert [o.token for o in result.outcomes] == tokens
    assert [o.token for o in result.delivered] == [tokens[0], tokens[2]]
    assert result.invalid_tokens == [tokens[1]]
    assert result.retry_tokens == []
    error = result.outcomes[1].error
    assert isinstance(error, PermanentDeliveryError)
    assert (error.provider_code, error.reason) == ("UNREGISTERED", "unregistered")


@pytest.mark.parametrize(
    ("code", "reason"),
    [("INVALID_ARGUMENT", "invalid_request"), ("SENDER_ID_MISMATCH", "sender_id_mismatch")],
)
async def test_refusals_are_permanent_but_keep_the_token(
    fake: FakeFcm, sender: FcmPushSender, code: str, reason: str
) -> None:
    fake.fail_next(fcm_error(code))

    result = await sender.send(push(), [fid("device-a")])

    (outcome,) = result.outcomes
    assert isinstance(outcome.error, PermanentDeliveryError)
    assert (outcome.error.provider_code, outcome.error.reason) == (code, reason)
    assert not outcome.token_invalid


@pytest.mark.parametrize(
    ("code", "reason", "retry_after"),
    [
        ("UNAVAILABLE", "provider_unavailable", None),
        ("INTERNAL", "provider_unavailable", None),
        ("QUOTA_EXCEEDED", "rate_limited", 30.0),
    ],
)
async def test_outages_and_quota_are_retriable(
    fake: FakeFcm, sender: FcmPushSender, code: str, reason: str, retry_after: float | None
) -> None:
    headers = {"Retry-After": "30"} if retry_after else None
    fake.fail_next(fcm_error(code, headers=headers))

    result = await sender.send(push(), [fid("device-a")])

    assert result.retry_tokens == [fid("device-a")]
    error = result.outcomes[0].error
    assert isinstance(error, RetriableDeliveryError)
    assert (error.provider_code, error.reason, error.retry_after) == (code, reason, retry_after)


@pytest.mark.parametrize("status", [500, 503])
async def test_a_server_error_is_sent_exactly_once(fake: FakeFcm, sender: FcmPushSender, status: int) -> None:
    fake.fail_next(Reply(status, b"try later"))
    before = len(fake.sends)

    result = await sender.send(push(), [fid("device-a")])

    assert len(fake.sends) - before == 1  # the SDK's own retry on 500/503 is off
    assert isinstance(result.outcomes[0].error, RetriableDeliveryError)


async def test_the_sdk_on_its_own_would_post_twice(fake: FakeFcm, service_account: dict[str, str]) -> None:
    """The control for the test above: firebase-admin's default transport retries a 503."""
    app = firebase_admin.initialize_app(
        credentials.Certificate(service_account), {"projectId": PROJECT}, name="control-retrying"
    )
    service: Any = messaging._get_messaging_service(app)
    service._fcm_url = f"{fake.url}/v1/projects/{PROJECT}/messages:send"
    fake.fail_next(Reply(503, b"try later"))
    before = len(fake.sends)
    try:
        await asyncio.to_thread(messaging.send_each, [messaging.Message(fid="device-a")], app=app)
    finally:
        # delete_app closes an async client with asyncio.run: not on this loop's thread.
        await asyncio.to_thread(firebase_admin.delete_app, app)
    assert len(fake.sends) - before == 2


async def test_a_hanging_server_times_out_as_retriable(fake: FakeFcm, sender: FcmPushSender) -> None:
    await sender.send(push(), [fid("warm-up")])  # fetch the access token first: only the send hangs
    fake.hang_next(seconds=5)

    result = await sender.send(push(), [fid("device-a")])

    error = result.outcomes[0].error
    assert isinstance(error, RetriableDeliveryError)
    assert error.provider_code == "DEADLINE_EXCEEDED"


async def test_a_registration_token_is_sent_as_token_without_a_warning(
    fake: FakeFcm, sender: FcmPushSender
) -> None:
    before = len(fake.sends)

    result = await sender.send(push(), [PushToken("legacy-registration", TokenKind.FCM_TOKEN)])

    assert result.outcomes[0].delivered
    message = fake.sends[before].json()["message"]
    assert message["token"] == "legacy-registration"
    assert "fid" not in message


async def test_an_apns_token_is_refused_without_a_call(fake: FakeFcm, sender: FcmPushSender) -> None:
    before = len(fake.sends)

    result = await sender.send(push(), [PushToken("ab" * 32, TokenKind.APNS)])

    assert len(fake.sends) == before
    error = result.outcomes[0].error
    assert isinstance(error, PermanentDeliveryError) and error.reason == "unsupported_token"


async def test_a_token_endpoint_refusal_fails_the_whole_call(fake: FakeFcm) -> None:
    stranger, _ = make_service_account(fake.token_uri, PROJECT)  # a key the fake does not know
    adapter = FcmPushSender(stranger, base_url=fake.url, timeout=0.5)
    try:
        with pytest.raises(PermanentDeliveryError) as caught:
            await adapter.send(push(), [fid("device-a")])
        assert (caught.value.provider_code, caught.value.reason) == ("oauth", "provider_auth")
    finally:
        await adapter.aclose()
