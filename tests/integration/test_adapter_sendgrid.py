"""SendGridEmailSender against a fake SendGrid v3 API over loopback, through the real `sendgrid` SDK."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from adapters.email.sendgrid import (
    ATTEMPT_ARG,
    EVENT_ID_ARG,
    NOTIFICATION_ID_ARG,
    NOTIFICATION_ID_HEADER,
    RECIPIENT_ARG,
    SendGridEmailSender,
)
from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from schemas.notifications import EmailNotification
from tests.fakes.http import Reply
from tests.fakes.sendgrid import FakeSendGrid, sendgrid_error

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key="SG.test-key") as server:
        yield server


@pytest.fixture
def sender(fake: FakeSendGrid) -> Iterator[SendGridEmailSender]:
    yield SendGridEmailSender(
        "SG.test-key", sender="Herald <herald@example.com>", base_url=fake.url, timeout=0.5
    )


def email(notification_id: str = "ntf_sendgrid_1", html: str | None = "<p>Hi</p>") -> EmailNotification:
    now = datetime.now(UTC)
    return EmailNotification(
        notification_id=notification_id,
        event_id="evt-1",
        event_type="order.shipped",
        recipient="user-1",
        occurred_at=now,
        created_at=now,
        to="ada@example.com",
        subject="Your order shipped",
        text="Hi",
        html=html,
    )


async def test_a_send_returns_the_message_id_and_posts_the_mail(
    fake: FakeSendGrid, sender: SendGridEmailSender
) -> None:
    before = len(fake.sends)

    message_id = await sender.send(email("ntf_sendgrid_ok"))

    assert message_id is not None and message_id.startswith("sg-msg-")
    request = fake.sends[before]
    assert request.headers["authorization"] == "Bearer SG.test-key"
    body = request.json()
    assert body["from"] == {"email": "herald@example.com", "name": "Herald"}
    assert body["subject"] == "Your order shipped"
    personalization = body["personalizations"][0]
    assert personalization["to"] == [{"email": "ada@example.com"}]
    assert body["custom_args"] == {
        NOTIFICATION_ID_ARG: "ntf_sendgrid_ok",
        RECIPIENT_ARG: "user-1",
        EVENT_ID_ARG: "evt-1",
        ATTEMPT_ARG: "1",
    }
    assert body["headers"] == {NOTIFICATION_ID_HEADER: "ntf_sendgrid_ok"}
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]


async def test_a_wrong_api_key_is_permanent(fake: FakeSendGrid) -> None:
    sender = SendGridEmailSender("SG.wrong", sender="herald@example.com", base_url=fake.url, timeout=0.5)

    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send(email())

    assert caught.value.provider_code == "401"
    assert caught.value.reason == "provider_auth"
    await sender.aclose()


@pytest.mark.parametrize(
    ("status", "reason"),
    [(400, "invalid_request"), (401, "provider_auth"), (403, "provider_auth"), (413, "payload_too_large")],
)
async def test_refusals_are_permanent(
    fake: FakeSendGrid, sender: SendGridEmailSender, status: int, reason: str
) -> None:
    fake.fail_next(sendgrid_error(status, "no"))

    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send(email())

    assert caught.value.provider_code == str(status)
    assert caught.value.reason == reason
    assert "no" in caught.value.detail


async def test_429_is_retriable_after_the_providers_delay(
    fake: FakeSendGrid, sender: SendGridEmailSender
) -> None:
    fake.fail_next(sendgrid_error(429, "too many requests", {"Retry-After": "7"}))

    with pytest.raises(RetriableDeliveryError) as caught:
        await sender.send(email())

    assert caught.value.provider_code == "429"
    assert caught.value.reason == "rate_limited"
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retriable(
    fake: FakeSendGrid, sender: SendGridEmailSender, status: int
) -> None:
    fake.fail_next(Reply(status, b"upstream trouble"))

    with pytest.raises(RetriableDeliveryError) as caught:
        await sender.send(email())

    assert caught.value.provider_code == str(status)
    assert caught.value.retry_after is None


async def test_a_hanging_server_times_out_as_retriable(
    fake: FakeSendGrid, sender: SendGridEmailSender
) -> None:
    fake.hang_next(seconds=5)

    with pytest.raises(RetriableDeliveryError) as caught:
        await sender.send(email())

    assert caught.value.reason == "provider_unavailable"


async def test_a_closed_port_is_retriable() -> None:
    with FakeSendGrid() as gone:
        url = gone.url
    sender = SendGridEmailSender("SG.test-key", sender="herald@example.com", base_url=url, timeout=0.5)

    with pytest.raises(RetriableDeliveryError):
        await sender.send(email())
    await sender.aclose()


async def test_a_refusal_quoting_the_address_keeps_only_its_pseudonym(
    fake: FakeSendGrid, sender: SendGridEmailSender
) -> None:
    from kernel.privacy import pseudonym

    fake.fail_next(sendgrid_error(400, "Does not contain a valid address: Ada@Example.com"))

    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send(email())

    assert "example.com" not in caught.value.detail.lower()
    assert pseudonym("ada@example.com") in caught.value.detail
