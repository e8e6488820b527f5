"""SnsSmsSender against moto's SNS server (behind a scriptable proxy) over loopback, through real boto3."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest

from adapters.sms.sns import SnsSmsSender
from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from schemas.notifications import SmsNotification
from tests.fakes.sns import FakeSns, sns_error

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSns]:
    with FakeSns() as server:
        yield server


@pytest.fixture
async def sender(fake: FakeSns) -> AsyncIterator[SnsSmsSender]:
    adapter = SnsSmsSender(
        region="eu-west-1",
        endpoint_url=fake.url,
        access_key_id="testing",
        secret_access_key="testing",  # moto accepts any key
        sender_id="Herald",
        timeout=0.5,
    )
    yield adapter
    await adapter.aclose()


def sms(to: str = "+447700900123") -> SmsNotification:
    now = datetime.now(UTC)
    return SmsNotification(
        notification_id="ntf_sns_1",
        event_id="evt-1",
        event_type="login.code",
        recipient="user-1",
        occurred_at=now,
        created_at=now,
        to=to,
        text="Your code is 123456",
    )


async def test_a_publish_returns_the_message_id(fake: FakeSns, sender: SnsSmsSender) -> None:
    before = len(fake.publishes)

    message_id = await sender.send(sms())

    assert message_id
    publishes = fake.publishes[before:]
    assert len(publishes) == 1
    form = publishes[0].form()
    assert form["PhoneNumber"] == "+447700900123"
    assert form["Message"] == "Your code is 123456"
    assert "AWS4-HMAC-SHA256 Credential=testing/" in publishes[0].headers["authorization"]
    attributes = {
        form[k]: form[k.replace(".Name", ".Value.StringValue")] for k in form if k.endswith(".Name")
    }
    assert attributes == {"AWS.SNS.SMS.SMSType": "Transactional", "AWS.SNS.SMS.SenderID": "Herald"}


async def test_a_malformed_number_is_refused_by_sns_permanently(sender: SnsSmsSender) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send(sms(to="not-a-number"))

    assert caught.value.provider_code == "InvalidParameter"
    assert caught.value.reason == "invalid_request"


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (400, "Throttling", "rate_limited"),
        (429, "Throttled", "rate_limited"),
        (500, "InternalError", "provider_unavailable"),
        (503, "ServiceUnavailable", "provider_unavailable"),
    ],
)
async def test_throttling_and_server_errors_are_retriable_and_sent_once(
    fake: FakeSns, sender: SnsSmsSender, status: int, code: str, reason: str
) -> None:
    fake.fail_next(sns_error(status, code))
    before = len(fake.publishes)

    with pytest.raises(RetriableDeliveryError) as caught:
        await sender.send(sms())

    assert (caught.value.provider_code, caught.value.reason) == (code, reason)
    assert len(fake.publishes) - before == 1  # botocore's own retries are off


async def test_an_invalid_parameter_answer_is_permanent(fake: FakeSns, sender: SnsSmsSender) -> None:
    fake.fail_next(sns_error(400, "InvalidParameter", "Invalid parameter: PhoneNumber"))

    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send(sms())

    assert caught.value.provider_code == "InvalidParameter"


async def test_a_hanging_server_times_out_as_retriable(fake: FakeSns, sender: SnsSmsSender) -> None:
    fake.hang_next(seconds=5)

    with pytest.raises(RetriableDeliveryError) as caught:
        await sender.send(sms())

    assert caught.value.reason == "provider_unavailable"


async def test_a_refusal_naming_the_number_keeps_only_its_pseudonym(
    fake: FakeSns, sender: SnsSmsSender
) -> None:
    from kernel.privacy import pseudonym

    fake.fail_next(
        sns_error(400, "InvalidParameter", "Invalid parameter: PhoneNumber Reason: 447700900123 is not valid")
    )

    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send(sms())

    assert "447700900123" not in caught.value.detail
    assert pseudonym("+447700900123") in caught.value.detail
