"""The delivery step's decisions, without a broker: what a notification's bytes and its providers' answer
lead to (statuses, the dedup entry, a retry on its tier, the DLQ, addresses to forget)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kernel.errors import InvalidEvent, PermanentDeliveryError, RetriableDeliveryError
from schemas.channels import Channel
from schemas.notifications import EmailNotification, NotificationBase, PushNotification, SmsNotification
from schemas.reasons import DeliveryReason
from schemas.status import Outcome
from schemas.users import Device, Platform, ProfileUpdate, UserProfile
from streams.delivery.answers import Answer
from streams.delivery.failover import Attempt, Sent
from streams.delivery.hygiene import Hygiene, push_hygiene, sms_hygiene
from streams.delivery.retry_policy import RetryPolicy
from streams.delivery.steps import (
    ChannelSpec,
    Decision,
    Verdict,
    check_duplicate,
    conclude,
    parse,
    reject,
)
from streams.effects import Record

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OCCURRED = NOW - timedelta(seconds=5)
POLICY = RetryPolicy(
    base_delay_seconds=2.0, multiplier=4.0, max_delay_seconds=600.0, jitter=0.0, max_attempts=4, tiers=2
)
RETENTION = 3600.0


def spec(channel: Channel, model: type[Any], hygiene: Hygiene[Any] | None = None) -> ChannelSpec[Any]:
    return ChannelSpec(
        channel=channel,
        model=model,
        policy=POLICY,
        retry_topics=(f"herald.deliver.{channel.value}.retry.1", f"herald.deliver.{channel.value}.retry.2"),
        users_topic="herald.users",
        dedup_retention_seconds=RETENTION,
        hygiene=hygiene,
    )


EMAIL = spec(Channel.EMAIL, EmailNotification)
SMS = spec(Channel.SMS, SmsNotification, sms_hygiene)
PUSH = spec(Channel.PUSH, PushNotification, push_hygiene)

BASE: dict[str, Any] = {
    "notification_id": "ntf_1",
    "event_id": "evt_1",
    "event_type": "order.shipped",
    "recipient": "ada",
    "occurred_at": OCCURRED,
    "created_at": OCCURRED,
}


def email(**changes: Any) -> EmailNotification:
    return EmailNotification(**{**BASE, "to": "ada@example.com", "subject": "S", "text": "T", **changes})


def sms(**changes: Any) -> SmsNotification:
    return SmsNotification(**{**BASE, "to": "+33612345678", "text": "T", **changes})


def push(*tokens: str, **changes: Any) -> PushNotification:
    devices = [Device(token=t, platform=Platform.ANDROID) for t in tokens]
    return PushNotification(**{**BASE, "devices": devices, "title": "T", "body": "B", **changes})


def ok(provider: str, message_id: str = "id-1", latency: float = 0.25) -> Attempt:
    return Attempt(provider, latency, provider_message_id=message_id)


def failed(provider: str, error: Exception, latency: float = 0.5) -> Attempt:
    assert isinstance(error, RetriableDeliveryError | PermanentDeliveryError)
    return Attempt(provider, latency, error=error)


def decide(
    step: ChannelSpec[Any],
    notification: NotificationBase,
    answer: Answer,
    *,
    profile: UserProfile | None = None,
    rand: float = 0.5,
) -> Decision:
    return conclude(step, notification, answer, profile=profile, now=NOW, rand=lambda: rand)


# Before sending


def test_a_valid_notification_is_parsed_as_the_channels_model() -> None:
    parsed = parse(EMAIL, email().to_json())
    assert parsed == email()


@pytest.mark.parametrize(
    "value",
    [b"not json", None, b"{}", sms().to_json()],  # the last: a valid notification, but for another channel
    ids=["not-json", "tombstone", "empty-object", "wrong-channel"],
)
def test_an_invalid_notification_is_rejected_at_the_channels_stage(value: bytes | None) -> None:
    decision = parse(EMAIL, value)
    assert isinstance(decision, Decision)
    assert decision.verdict is Verdict.REJECTED and decision.reason == "invalid_notification"
    [rejected] = decision.effects.rejected
    assert isinstance(rejected.error, InvalidEvent)
    assert (rejected.error.reason, rejected.stage) == ("invalid_notification", "email")
    assert not (decision.effects.statuses or decision.effects.records or decision.effects.writes)


def test_an_unforeseen_error_is_rejected_as_internal() -> None:
    decision = reject(SMS, KeyError("boom"))
    assert decision.reason == "internal_error"
    assert [r.stage for r in decision.effects.rejected] == ["sms"]


def test_a_notification_already_delivered_is_skipped_as_a_duplicate() -> None:
    decision = check_duplicate(EMAIL, email(), NOW.timestamp() - 60, NOW)
    assert decision is not None and decision.verdict is Verdict.SKIPPED
    [status] = decision.effects.statuses
    assert (status.outcome, status.reason, status.provider) == (Outcome.SKIPPED, "duplicate", "-")
    assert (status.notification_id, status.channel, status.at) == ("ntf_1", Channel.EMAIL, NOW)
    assert not (decision.effects.writes or decision.effects.records or decision.effects.rejected)


@pytest.mark.parametrize(
    "delivered_at", [None, NOW.timestamp() - RETENTION - 1], ids=["never-delivered", "expired-entry"]
)
def test_a_new_notification_is_to_be_sent(delivered_at: float | None) -> None:
    assert check_duplicate(EMAIL, email(), delivered_at, NOW) is None


# After the providers answered


def test_delivered_writes_the_dedup_entry_and_failed_attempts_come_before_the_delivered_one() -> None:
    down = RetriableDeliveryError("timeout", reason=DeliveryReason.PROVIDER_UNAVAILABLE, provider_code="504")
    answer = Answer((failed("sendgrid", down), ok("smtp", "m-42")), Sent("smtp", "m-42"))
    decision = decide(EMAIL, email(), answer)

    assert decision.verdict is Verdict.DELIVERED
    [write] = decision.effects.writes
    # One entry for this notification, of constant size: the recipient's other deliveries are not rewritten.
    assert (write.table, write.key, write.value) == ("delivered", "ada\x1fntf_1", NOW.timestamp())
    statuses = [
        (s.provider, s.outcome, s.reason, s.provider_code, s.provider_message_id, s.latency_seconds)
        for s in decision.effects.statuses
    ]
    assert statuses == [
        ("sendgrid", Outcome.FAILED, "provider_unavailable", "504", None, 0.5),
        ("smtp", Outcome.DELIVERED, None, None, "m-42", 0.25),
    ]
    assert all(s.at == NOW and s.attempt == 1 for s in decision.effects.statuses)
    assert not (decision.effects.records or decision.effects.rejected)
    assert [a.provider for a in decision.attempts] == ["sendgrid", "smtp"]


def test_retriable_goes_to_the_tier_of_the_next_attempt_not_before_its_backoff() -> None:
    busy = RetriableDeliveryError("451 try later", reason="throttled", provider_code="451")
    answer = Answer((failed("smtp", busy),), busy)

    first = decide(EMAIL, email(), answer)
    assert (first.verdict, first.reason) == (Verdict.RETRY, "throttled")
    [record] = first.effects.records
    assert (record.topic, record.key) == ("herald.deliver.email.retry.1", b"ada")
    retry = EmailNotification.model_validate_json(record.value or b"")
    assert retry.attempt == 2
    assert retry.not_before == NOW + timedelta(seconds=2)  # base delay, no jitter
    assert [s.outcome for s in first.effects.statuses] == [Outcome.FAILED]
    assert not (first.effects.writes or first.effects.rejected)

    # The third attempt waits on the last tier (there are two), four times longer than the second.
    third = decide(EMAIL, email(attempt=2), answer)
    [record] = third.effects.records
    assert record.topic == "herald.deliver.email.retry.2"
    retry = EmailNotification.model_validate_json(record.value or b"")
    assert (retry.attempt, retry.not_before) == (3, NOW + timedelta(seconds=8))


def test_a_providers_retry_after_is_a_floor_and_jitter_is_drawn() -> None:
    slow = RetriableDeliveryError("429", reason="throttled", retry_after=30.0)
    [record] = decide(EMAIL, email(), Answer((), slow)).effects.records
    assert EmailNotification.model_validate_json(record.value or b"").not_before == NOW + timedelta(
        seconds=30
    )

    jittery = replace(EMAIL, policy=RetryPolicy(base_delay_seconds=10.0, jitter=0.5))
    down = RetriableDeliveryError("down")
    [low] = decide(jittery, email(), Answer((), down), rand=0.0).effects.records
    [high] = decide(jittery, email(), Answer((), down), rand=0.999).effects.records
    delays = [
        (EmailNotification.model_validate_json(r.value or b"").not_before or NOW) - NOW for r in (low, high)
    ]
    assert delays[0] == timedelta(seconds=5) and timedelta(seconds=14.9) < delays[1] < timedelta(seconds=15)


def test_a_partial_push_retries_only_the_devices_not_reached_and_records_the_accepted_attempt() -> None:
    notification = push("reached", "unreachable")
    rest = notification.model_copy(update={"devices": notification.devices[1:]})
    error = RetriableDeliveryError("1 of 2 device(s) to retry", reason="unavailable", retry_with=rest)
    answer = Answer((ok("fcm", "fcm-1"),), error)
    decision = decide(PUSH, notification, answer)

    assert decision.verdict is Verdict.RETRY
    [record] = decision.effects.records
    retry = PushNotification.model_validate_json(record.value or b"")
    assert [d.token for d in retry.devices] == ["unreachable"] and retry.attempt == 2
    # Delivered to one device, without a dedup entry: the retry must still go out.
    assert [(s.provider, s.outcome) for s in decision.effects.statuses] == [("fcm", Outcome.DELIVERED)]
    assert not decision.effects.writes


def test_retries_exhausted_end_on_the_dlq_with_a_dead_lettered_status() -> None:
    busy = RetriableDeliveryError("421 busy", reason="throttled", provider_code="421")
    decision = decide(EMAIL, email(attempt=POLICY.max_attempts), Answer((failed("smtp", busy),), busy))

    assert (decision.verdict, decision.reason) == (Verdict.DEAD_LETTERED, "retries_exhausted")
    [rejected] = decision.effects.rejected
    assert isinstance(rejected.error, RetriableDeliveryError) and rejected.stage == "email"
    assert rejected.error.reason == "retries_exhausted" and rejected.error.provider_code == "421"
    assert "gave up after 4 attempts" in rejected.error.detail
    statuses = [(s.outcome, s.reason, s.attempt) for s in decision.effects.statuses]
    assert statuses == [(Outcome.FAILED, "throttled", 4), (Outcome.DEAD_LETTERED, "retries_exhausted", 4)]
    assert decision.effects.statuses[-1].provider_code == "421"
    assert not (decision.effects.records or decision.effects.writes)


def test_permanent_refusal_ends_on_the_dlq_with_the_providers_code() -> None:
    refused = PermanentDeliveryError("550 no such user", reason="provider_refused", provider_code="550")
    decision = decide(EMAIL, email(), Answer((failed("smtp", refused),), refused))

    assert (decision.verdict, decision.reason) == (Verdict.DEAD_LETTERED, "provider_refused")
    assert [(r.error, r.stage) for r in decision.effects.rejected] == [(refused, "email")]
    statuses = [(s.provider, s.outcome, s.reason, s.provider_code) for s in decision.effects.statuses]
    assert statuses == [
        ("smtp", Outcome.FAILED, "provider_refused", "550"),
        ("-", Outcome.DEAD_LETTERED, "provider_refused", "550"),
    ]
    assert not (decision.effects.records or decision.effects.writes)


def test_no_provider_is_dead_lettered_without_an_attempt() -> None:
    none = PermanentDeliveryError("no provider is configured for this channel", reason="no_provider")
    decision = decide(EMAIL, email(), Answer((), none))
    assert [(s.outcome, s.reason) for s in decision.effects.statuses] == [
        (Outcome.DEAD_LETTERED, "no_provider")
    ]


# Hygiene, as the step applies it


def profile(**fields: Any) -> UserProfile:
    return UserProfile(user_id="ada", **fields)


def profile_update(record: Record) -> ProfileUpdate:
    return ProfileUpdate.model_validate_json(record.value or b"")


def test_an_unsubscribed_number_is_removed_from_the_profile_that_still_has_it() -> None:
    stop = PermanentDeliveryError("21610", reason="unsubscribed", provider_code="21610")
    answer = Answer((failed("twilio", stop),), stop)
    decision = decide(SMS, sms(), answer, profile=profile(phone="+33612345678"))

    assert decision.verdict is Verdict.DEAD_LETTERED and decision.addresses_removed == 1
    [record] = decision.effects.records
    assert (record.topic, record.key) == ("herald.users", b"ada")
    # A partial update: only the phone, cleared (null is meaningful on the users topic).
    assert record.value == b'{"user_id":"ada","phone":null}'
    assert [s.outcome for s in decision.effects.statuses] == [Outcome.FAILED, Outcome.DEAD_LETTERED]


@pytest.mark.parametrize(
    "stored", [None, profile(phone="+33699999999"), profile()], ids=["no-profile", "new-number", "no-number"]
)
def test_an_unsubscribed_number_the_profile_no_longer_has_is_left_alone(stored: UserProfile | None) -> None:
    stop = PermanentDeliveryError("21610", reason="unsubscribed")
    decision = decide(SMS, sms(), Answer((failed("twilio", stop),), stop), profile=stored)
    assert decision.effects.records == [] and decision.addresses_removed == 0
    assert decision.verdict is Verdict.DEAD_LETTERED


def test_another_permanent_sms_refusal_keeps_the_number() -> None:
    invalid = PermanentDeliveryError("21211", reason="invalid_number")
    decision = decide(SMS, sms(), Answer((), invalid), profile=profile(phone="+33612345678"))
    assert decision.effects.records == [] and decision.addresses_removed == 0


def test_invalid_push_tokens_are_removed_even_when_the_others_were_reached() -> None:
    stored = profile(
        devices=[
            Device(token="phone", platform=Platform.ANDROID),
            Device(token="old-tablet", platform=Platform.ANDROID),
            Device(token="old-phone", platform=Platform.IOS),
        ]
    )
    answer = Answer((ok("fcm"),), Sent("fcm", "id-1"), gone_tokens=("old-tablet", "old-phone", "unknown"))
    decision = decide(PUSH, push("phone", "old-tablet", "old-phone"), answer, profile=stored)

    assert decision.verdict is Verdict.DELIVERED and decision.addresses_removed == 2
    [record] = decision.effects.records
    update = profile_update(record)
    assert update.model_fields_set == {"user_id", "devices"}  # a partial update: the devices only
    assert [d.token for d in update.devices or []] == ["phone"]
    assert len(decision.effects.writes) == 1  # delivered to the phone: the dedup entry as usual


def test_push_tokens_already_gone_from_the_profile_need_no_update() -> None:
    answer = Answer((), PermanentDeliveryError("gone", reason="unregistered"), gone_tokens=("old",))
    stored = profile(devices=[Device(token="new", platform=Platform.ANDROID)])
    decision = decide(PUSH, push("old"), answer, profile=stored)
    assert decision.effects.records == [] and decision.addresses_removed == 0
    assert decision.verdict is Verdict.DEAD_LETTERED
