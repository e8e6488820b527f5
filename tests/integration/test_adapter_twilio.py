"""TwilioSmsSender against a fake Twilio Messages API over loopback, through the real `twilio` SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest

from adapters.sms.twilio import TwilioSmsSender
from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from schemas.notifications import SmsNotification
from tests.fakes.http import Reply
from tests.fakes.twilio import FakeTwilio, twilio_error

pytestmark = pytest.mark.integration

SENDER = "+15005550006"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


@pytest.fixture
async def sender(fake: FakeTwilio) -> AsyncIterator[TwilioSmsSender]:
    adapter = TwilioSmsSender(
        fake.account_sid, fake.auth_token, sender=SENDER, base_url=fake.url, timeout=0.5
    )
    yield adapter
    await adapter.aclose()


def sms(to: str = "+447700900123") -> SmsNotification:
    now = datetime.now(UTC)
    return SmsNotification(
        notification_id="ntf_twilio_1",
        event_id="evt-1",
        event_type="login.code",
        recipient="user-1",
        occurred_at=now,
        created_at=now,
        to=to,
        text="Your code is 123456",
    )


async def test_a_send_returns_the_message_sid_and_posts_the_form(
    fake: FakeTwilio, sender: TwilioSmsSender
) -> None:
    before = len(fake.sends)

    sid = await sender.send(sms())

    assert sid is not None and sid.startswith("SM")
    request = fake.sends[before:]
    assert len(request) == 1
    assert request[0].path == f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    assert request[0].headers["authorization"].startswith("Basic ")
    assert request[0].form() == {"To": "+447700900123", "From": SENDER, "Body": "Your code is 123456"}


async def test_a_wrong_auth_token_is_permanent(fake: FakeTwilio) -> None:
    adapter = TwilioSmsSender(fake.account_sid, "wrong", sender=SENDER, base_url=fake.url, timeout=0.5)

    with pytest.raises(PermanentDeliveryError) as caught:
        await adapter.send(sms())

    assert (caught.value.provider_code, caught.value.reason) == ("20003", "provider_auth")
    await adapter.aclose()


@pytest.mark.parametrize(
    ("code", "reason"),
    [(21211, "invalid_number"), (21610, "unsubscribed"), (21614, "not_mobile")],
)
async def test_number_refusals_are_permanent(
    fake: FakeTwilio, sender: TwilioSmsSender, code: int, reason: str
) -> None:
    fake.fail_next(twilio_error(400, code, "refused"))

    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send(sms())

    assert caught.value.provider_code == str(code)
    assert caught.value.reason == reason
    assert "\x1b" not in caught.value.detail  # Twilio's str() colours text for terminals


async def test_too_many_requests_is_retriable(fake: FakeTwilio, sender: TwilioSmsSender) -> None:
    fake.fail_next(twilio_error(429, 20429, "Too Many Requests"))

    with pytest.raises(RetriableDeliveryError) as caught:
        await sender.send(sms())

    assert (caught.value.provider_code, caught.value.reason) == ("20429", "rate_limited")


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retriable_and_sent_once(
    fake: FakeTwilio, sender: TwilioSmsSender, status: int
) -> None:
    fake.fail_next(Reply(status, b"oops"))
    before = len(fake.sends)

    with pytest.raises(RetriableDeliveryError) as caught:
        await sender.send(sms())

    assert caught.value.provider_code == str(status)
    assert len(fake.sends) - before == 1


async def test_a_hanging_server_times_out_as_retriable(fake: FakeTwilio, sender: TwilioSmsSender) -> None:
    fake.hang_next(seconds=5)

    with pytest.raises(RetriableDeliveryError) as caught:
        await sender.send(sms())

    assert caught.value.reason == "provider_unavailable"


async def test_a_timed_out_connection_is_not_reused_for_the_next_send() -> None:
    # A kept-alive connection whose request timed out still has that request's answer coming. Reused, it
    # would hand the next send the late 500: that send would be retried although Twilio accepted it, and
    # the person would get it twice.
    with FakeTwilio(keep_alive=True) as fake:
        adapter = TwilioSmsSender(
            fake.account_sid, fake.auth_token, sender=SENDER, base_url=fake.url, timeout=0.3, connections=1
        )
        try:
            assert (await adapter.send(sms())) is not None  # a connection to keep
            fake.answer_late(twilio_error(500, 20500, "late"), seconds=0.8)
            with pytest.raises(RetriableDeliveryError):
                await adapter.send(sms())
            sids = [await adapter.send(sms()) for _ in range(3)]
        finally:
            await adapter.aclose()
    assert all(sid is not None and sid.startswith("SM") for sid in sids)
    assert len(fake.sends) == 5
    assert len(set(sids)) == 3


async def test_sends_reuse_kept_alive_connections() -> None:
    with FakeTwilio(keep_alive=True) as fake:
        adapter = TwilioSmsSender(
            fake.account_sid, fake.auth_token, sender=SENDER, base_url=fake.url, connections=2
        )
        try:
            await asyncio.gather(*(adapter.send(sms()) for _ in range(20)))
        finally:
            await adapter.aclose()
    assert len(fake.sends) == 20
    assert len(fake.peers) <= 2


async def test_a_refusal_naming_the_number_keeps_only_its_pseudonym(
    fake: FakeTwilio, sender: TwilioSmsSender
) -> None:
    from kernel.privacy import pseudonym

    # Twilio's own wording for 21211 quotes the number; the detail goes to the DLQ and the status topic.
    fake.fail_next(twilio_error(400, 21211, "The 'To' number +447700900123 is not a valid phone number."))

    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send(sms())

    assert "447700900123" not in caught.value.detail and "447700900123" not in str(caught.value)
    assert pseudonym("+447700900123") in caught.value.detail
