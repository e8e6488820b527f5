"""Delivery receipts: Twilio's statuses and SendGrid's events mapped to status records, once each and never
backwards, the callback URL Twilio is given, and both routes in process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from twilio.request_validator import RequestValidator

from adapters.email.sendgrid import ATTEMPT_ARG, EVENT_ID_ARG, NOTIFICATION_ID_ARG, RECIPIENT_ARG
from adapters.sms.twilio import STATUS_CALLBACK_PATH, status_callback_url
from kernel.errors import ConfigurationError
from kernel.settings import load_settings
from schemas.channels import Channel
from schemas.notifications import SmsNotification
from schemas.reasons import DeliveryReason
from schemas.status import RECEIPT_RANKS, DeliveryStatus, Outcome
from schemas.users import ProfileUpdate
from streams.ops.bounce_webhook import DEFAULT_PATH, WebhookMetrics, bounce_webhook_route, load_public_key
from streams.ops.receipts import (
    Receipt,
    ReceiptMemory,
    Receipts,
    sendgrid_receipt,
    sendgrid_status,
    twilio_receipt,
    twilio_status,
    twilio_status_route,
)
from tests.fakes.sendgrid_events import SendGridSigner, batch, bounce, event

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NOW_TS = int(NOW.timestamp())
BASE = "https://hooks.example.com/herald"
TOKEN = "twilio-auth-token"
IDS = {"nid": "ntf_1", "eid": "evt-1", "uid": "ada", "attempt": "2"}


def sms(attempt: int = 1) -> SmsNotification:
    return SmsNotification(
        notification_id="ntf_1",
        event_id="evt-1",
        event_type="login.code",
        recipient="ada",
        occurred_at=NOW,
        created_at=NOW,
        attempt=attempt,
        to="+447700900123",
        text="Your code is 123456",
    )


def status(outcome: Outcome, nid: str = "ntf_1", **extra: Any) -> DeliveryStatus:
    fields: dict[str, Any] = {
        "notification_id": nid,
        "event_id": "evt-1",
        "recipient": "ada",
        "channel": Channel.SMS,
        "provider": "twilio",
        "outcome": outcome,
        "attempt": 1,
        "at": NOW,
        **extra,
    }
    return DeliveryStatus.model_validate(fields)


# --- the callback URL ---------------------------------------------------------------------------------------


def test_the_callback_url_carries_ids_and_no_phone_number() -> None:
    url = status_callback_url(BASE + "/", sms(attempt=3))

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == BASE + STATUS_CALLBACK_PATH
    assert parse_qs(parts.query) == {"nid": ["ntf_1"], "eid": ["evt-1"], "uid": ["ada"], "attempt": ["3"]}
    assert "447700900123" not in url


@pytest.mark.parametrize(
    "value", ["hooks.example.com", "ftp://hooks.example.com", "https://", "https://h/?a=1", "https://u:p@h"]
)
def test_a_public_base_url_that_is_not_a_plain_http_url_fails_naming_the_setting(value: str) -> None:
    with pytest.raises(ConfigurationError, match="HERALD_PUBLIC_BASE_URL"):
        load_settings(public_base_url=value)


def test_the_public_base_url_is_optional_and_kept_without_its_trailing_slash() -> None:
    assert load_settings().public_base_url is None
    assert load_settings(public_base_url="").public_base_url is None
    assert load_settings(public_base_url="http://127.0.0.1:6066/").public_base_url == "http://127.0.0.1:6066"


# --- mapping ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"MessageStatus": "delivered"}, Receipt(Outcome.PROVIDER_DELIVERED)),
        ({"MessageStatus": "read"}, Receipt(Outcome.OPENED)),
        (
            {"MessageStatus": "undelivered", "ErrorCode": "30003"},
            Receipt(Outcome.PROVIDER_FAILED, DeliveryReason.UNREACHABLE_NUMBER, "30003"),
        ),
        (
            {"MessageStatus": "failed", "ErrorCode": "30005"},
            Receipt(Outcome.PROVIDER_FAILED, DeliveryReason.INVALID_NUMBER, "30005"),
        ),
        (
            {"MessageStatus": "undelivered", "ErrorCode": "30007"},
            Receipt(Outcome.PROVIDER_FAILED, DeliveryReason.PROVIDER_REFUSED, "30007"),
        ),
        ({"MessageStatus": "failed"}, Receipt(Outcome.PROVIDER_FAILED, DeliveryReason.PROVIDER_REFUSED)),
        ({"MessageStatus": "sent"}, Receipt(None)),
        ({"MessageStatus": "queued"}, Receipt(None)),
        ({"MessageStatus": "sending"}, Receipt(None)),
        ({"MessageStatus": "accepted"}, Receipt(None)),
        ({}, Receipt(None)),
    ],
)
def test_twilio_statuses(form: dict[str, str], expected: Receipt) -> None:
    assert twilio_receipt(form) == expected


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (event("delivered", "a@example.com"), Receipt(Outcome.PROVIDER_DELIVERED)),
        (event("deferred", "a@example.com"), Receipt(Outcome.PROVIDER_DEFERRED)),
        (event("open", "a@example.com"), Receipt(Outcome.OPENED)),
        (event("click", "a@example.com"), Receipt(Outcome.CLICKED)),
        (
            {"event": "dropped", "reason": "Bounced Address"},
            Receipt(Outcome.PROVIDER_FAILED, DeliveryReason.RECIPIENT_REFUSED),
        ),
        (
            {"event": "dropped", "reason": "Unsubscribed Address"},
            Receipt(Outcome.PROVIDER_FAILED, DeliveryReason.PROVIDER_REFUSED),
        ),
        (
            bounce("a@example.com", "ada"),
            Receipt(Outcome.PROVIDER_FAILED, DeliveryReason.RECIPIENT_REFUSED, "5.1.1"),
        ),
        (
            bounce("a@example.com", "ada", type="blocked"),
            Receipt(Outcome.PROVIDER_FAILED, DeliveryReason.PROVIDER_REFUSED, "4.0.0"),
        ),
        (event("processed", "a@example.com"), Receipt(None)),
        (event("spamreport", "a@example.com"), Receipt(None)),
        (event("unsubscribe", "a@example.com"), Receipt(None)),
    ],
)
def test_sendgrid_events(found: dict[str, Any], expected: Receipt) -> None:
    assert sendgrid_receipt(found) == expected


def test_a_twilio_callback_becomes_a_status_joined_to_its_notification() -> None:
    form = {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30006", "To": "+447700900123"}

    _, record = twilio_status(form, IDS, NOW)

    assert record == DeliveryStatus(
        notification_id="ntf_1",
        event_id="evt-1",
        recipient="ada",
        channel=Channel.SMS,
        provider="twilio",
        outcome=Outcome.PROVIDER_FAILED,
        attempt=2,
        at=NOW,
        provider_message_id="SM1",
        reason=DeliveryReason.NOT_MOBILE,
        provider_code="30006",
    )


def test_a_sendgrid_event_becomes_a_status_at_its_own_time() -> None:
    found = {
        **event("delivered", "ada@example.com"),
        "sg_message_id": "sg-msg-1.filter",
        NOTIFICATION_ID_ARG: "ntf_1",
        EVENT_ID_ARG: "evt-1",
        RECIPIENT_ARG: "ada",
        ATTEMPT_ARG: "1",
    }

    _, record = sendgrid_status(found, NOW)

    assert record is not None
    assert record.model_dump(exclude_none=True) == {
        "notification_id": "ntf_1",
        "event_id": "evt-1",
        "recipient": "ada",
        "channel": "email",
        "provider": "sendgrid",
        "outcome": "provider_delivered",
        "attempt": 1,
        "at": datetime.fromtimestamp(1_795_000_000, UTC),
        "provider_message_id": "sg-msg-1.filter",
    }


@pytest.mark.parametrize("missing", ["nid", "eid", "uid"])
def test_a_receipt_without_herald_ids_is_unattributed(missing: str) -> None:
    ids = {name: value for name, value in IDS.items() if name != missing}
    receipt, record = twilio_status({"MessageStatus": "delivered"}, ids, NOW)
    assert receipt.outcome is Outcome.PROVIDER_DELIVERED and record is None


@pytest.mark.parametrize("attempt", [None, "", "0", "-1", "x", "99999999"])
def test_an_odd_attempt_is_taken_as_the_first(attempt: str | None) -> None:
    ids = (
        {**IDS, "attempt": attempt}
        if attempt is not None
        else {k: v for k, v in IDS.items() if k != "attempt"}
    )
    _, record = twilio_status({"MessageStatus": "delivered"}, ids, NOW)
    assert record is not None and record.attempt == 1


# --- once each, never backwards -----------------------------------------------------------------------------


def test_every_receipt_outcome_has_a_rank() -> None:
    assert set(RECEIPT_RANKS) == {
        Outcome.PROVIDER_DEFERRED,
        Outcome.PROVIDER_DELIVERED,
        Outcome.PROVIDER_FAILED,
        Outcome.OPENED,
        Outcome.CLICKED,
    }


def test_a_replay_or_a_weaker_late_report_is_not_written() -> None:
    memory = ReceiptMemory()

    assert memory.claim(status(Outcome.PROVIDER_DELIVERED)) is not None
    assert memory.claim(status(Outcome.PROVIDER_DELIVERED)) is None  # replayed
    assert memory.claim(status(Outcome.PROVIDER_DEFERRED)) is None  # deferred after delivered
    assert memory.claim(status(Outcome.PROVIDER_DEFERRED, nid="ntf_2")) is not None  # another notification
    assert memory.claim(status(Outcome.OPENED)) is not None
    assert memory.claim(status(Outcome.PROVIDER_DELIVERED)) is None


def test_a_released_claim_can_be_taken_again() -> None:
    memory = ReceiptMemory()
    memory.claim(status(Outcome.PROVIDER_DEFERRED))
    claim = memory.claim(status(Outcome.PROVIDER_DELIVERED))
    assert claim is not None

    memory.release([claim])

    assert memory.claim(status(Outcome.PROVIDER_DEFERRED)) is None  # the deferral is still remembered
    assert memory.claim(status(Outcome.PROVIDER_DELIVERED)) is not None


def test_the_memory_is_bounded_and_forgets_the_least_recently_reported() -> None:
    memory = ReceiptMemory(capacity=2)
    memory.claim(status(Outcome.PROVIDER_DELIVERED, nid="a"))
    memory.claim(status(Outcome.PROVIDER_DELIVERED, nid="b"))
    memory.claim(status(Outcome.PROVIDER_DELIVERED, nid="a"))  # a replay refreshes a
    memory.claim(status(Outcome.PROVIDER_DELIVERED, nid="c"))

    assert len(memory) == 2
    assert memory.claim(status(Outcome.PROVIDER_DELIVERED, nid="a")) is None
    assert memory.claim(status(Outcome.PROVIDER_DELIVERED, nid="b")) is not None  # forgotten


# --- the routes ---------------------------------------------------------------------------------------------


class RecordingStatuses:
    def __init__(self, *, fail: BaseException | None = None) -> None:
        self.published: list[DeliveryStatus] = []
        self.fail = fail

    async def __call__(self, record: DeliveryStatus) -> None:
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        self.published.append(record)


def twilio_client(statuses: RecordingStatuses, metrics: WebhookMetrics) -> httpx.AsyncClient:
    route = twilio_status_route(
        auth_token=TOKEN,
        public_base_url=BASE,
        receipts=Receipts(statuses, ReceiptMemory()),
        clock=lambda: NOW,
        webhook_metrics=metrics,
    )
    # The worker is reached on its own address; Twilio signed the public URL.
    transport = httpx.ASGITransport(app=Starlette(routes=[route]))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:6066")


def signed_callback(form: dict[str, str], query: dict[str, str] = IDS) -> tuple[str, dict[str, str]]:
    path = f"{STATUS_CALLBACK_PATH}?{urlencode(query)}"
    signature = RequestValidator(TOKEN).compute_signature(f"{BASE}{path}", form)
    return path, {"X-Twilio-Signature": signature}


def sample(metrics: WebhookMetrics, name: str, **labels: str) -> float:
    return float(getattr(metrics, name).labels(**labels)._value.get())


async def test_a_signed_twilio_callback_is_written_once_and_a_forged_one_is_refused() -> None:
    statuses, metrics = RecordingStatuses(), WebhookMetrics(CollectorRegistry())
    form = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+447700900123"}
    path, headers = signed_callback(form)
    other_path, _ = signed_callback(form, {**IDS, "uid": "mallory"})

    async with twilio_client(statuses, metrics) as client:
        first = await client.post(path, data=form, headers=headers)
        replayed = await client.post(path, data=form, headers=headers)
        moved = await client.post(other_path, data=form, headers=headers)  # the query is signed too
        altered = await client.post(path, data={**form, "MessageStatus": "failed"}, headers=headers)
        unsigned = await client.post(path, data=form)

    assert [r.status_code for r in (first, replayed, moved, altered, unsigned)] == [204, 204, 403, 403, 403]
    assert [(s.notification_id, s.recipient, s.outcome, s.attempt) for s in statuses.published] == [
        ("ntf_1", "ada", "provider_delivered", 2)
    ]
    assert sample(metrics, "refused", provider="twilio", reason="bad_signature") == 2
    assert sample(metrics, "refused", provider="twilio", reason="missing_signature") == 1
    assert sample(metrics, "receipts", provider="twilio", outcome="recorded") == 1
    assert sample(metrics, "receipts", provider="twilio", outcome="superseded") == 1


async def test_a_twilio_status_herald_does_not_record_is_acknowledged() -> None:
    statuses, metrics = RecordingStatuses(), WebhookMetrics(CollectorRegistry())
    form = {"MessageSid": "SM1", "MessageStatus": "sent"}
    path, headers = signed_callback(form)

    async with twilio_client(statuses, metrics) as client:
        response = await client.post(path, data=form, headers=headers)

    assert response.status_code == 204 and statuses.published == []
    assert sample(metrics, "receipts", provider="twilio", outcome="ignored") == 1


async def test_a_twilio_receipt_that_cannot_be_published_answers_503_and_is_taken_when_sent_again() -> None:
    statuses, metrics = RecordingStatuses(fail=ConnectionError()), WebhookMetrics(CollectorRegistry())
    form = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    path, headers = signed_callback(form)

    async with twilio_client(statuses, metrics) as client:
        failed = await client.post(path, data=form, headers=headers)
        statuses.fail = None
        again = await client.post(path, data=form, headers=headers)

    assert (failed.status_code, again.status_code) == (503, 204)
    assert [s.outcome for s in statuses.published] == ["provider_delivered"]


def sendgrid_client(
    signer: SendGridSigner,
    statuses: RecordingStatuses,
    removals: list[ProfileUpdate],
    metrics: WebhookMetrics,
) -> httpx.AsyncClient:
    async def publish(update: ProfileUpdate) -> None:
        removals.append(update)

    route = bounce_webhook_route(
        publish=publish,
        public_key=load_public_key(signer.public_key_b64),
        clock=lambda: NOW,
        metrics=metrics,
        receipts=Receipts(statuses, ReceiptMemory()),
    )
    transport = httpx.ASGITransport(app=Starlette(routes=[route]))
    return httpx.AsyncClient(transport=transport, base_url="http://worker")


def tagged(found: dict[str, Any], nid: str = "ntf_1", recipient: str = "ada") -> dict[str, Any]:
    return {
        **found,
        NOTIFICATION_ID_ARG: nid,
        EVENT_ID_ARG: "evt-1",
        RECIPIENT_ARG: recipient,
        ATTEMPT_ARG: "1",
    }


async def test_sendgrid_events_become_statuses_in_rank_order_besides_the_bounce_removal() -> None:
    signer, statuses, metrics = SendGridSigner(), RecordingStatuses(), WebhookMetrics(CollectorRegistry())
    removals: list[ProfileUpdate] = []
    body = batch(
        tagged(event("open", "ada@example.com")),  # listed before the delivery it follows
        tagged(event("delivered", "ada@example.com")),
        tagged(event("processed", "ada@example.com")),
        tagged(event("delivered", "ada@example.com")),  # SendGrid repeats an event
        tagged(bounce("bob@example.com", "bob"), nid="ntf_2", recipient="bob"),
        event("delivered", "cy@example.com", "cy"),  # a mail of an earlier version: no ids
    )
    late = batch(tagged(event("deferred", "ada@example.com")))

    async with sendgrid_client(signer, statuses, removals, metrics) as client:
        response = await client.post(DEFAULT_PATH, content=body, headers=signer.headers(body, NOW_TS))
        later = await client.post(DEFAULT_PATH, content=late, headers=signer.headers(late, NOW_TS))

    assert (response.status_code, later.status_code) == (204, 204)
    assert [(s.notification_id, s.outcome, s.reason) for s in statuses.published] == [
        ("ntf_1", "provider_delivered", None),
        ("ntf_2", "provider_failed", "recipient_refused"),
        ("ntf_1", "opened", None),
    ]
    assert [r.user_id for r in removals] == ["bob"]  # the bounce still removes the address
    counts = {
        outcome: sample(metrics, "receipts", provider="sendgrid", outcome=outcome)
        for outcome in ("recorded", "ignored", "superseded", "unattributed")
    }
    assert counts == {"recorded": 3, "ignored": 1, "superseded": 2, "unattributed": 1}


async def test_without_receipts_the_sendgrid_webhook_writes_no_status() -> None:
    signer, metrics = SendGridSigner(), WebhookMetrics(CollectorRegistry())
    removals: list[ProfileUpdate] = []

    async def publish(update: ProfileUpdate) -> None:
        removals.append(update)

    route = bounce_webhook_route(
        publish=publish, public_key=load_public_key(signer.public_key_b64), clock=lambda: NOW, metrics=metrics
    )
    body = batch(tagged(event("delivered", "ada@example.com")), tagged(bounce("ada@example.com", "ada")))
    transport = httpx.ASGITransport(app=Starlette(routes=[route]))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        response = await client.post(DEFAULT_PATH, content=body, headers=signer.headers(body, NOW_TS))

    assert response.status_code == 204 and [r.user_id for r in removals] == ["ada"]
    assert sample(metrics, "receipts", provider="sendgrid", outcome="recorded") == 0
