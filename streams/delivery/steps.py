"""The delivery step as pure decisions: before sending, whether a notification is valid and new to its
recipient; once the providers answered, what follows (the dedup entry and statuses, a retry on its tier, or
the DLQ, and any address to forget). Each returns what should happen; the agents apply it."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import ValidationError

from kernel.errors import DeliveryError, InvalidEvent, RetriableDeliveryError
from schemas.base import describe_validation_error
from schemas.channels import Channel
from schemas.deadletter import DeadLetterReason, DeadLetterStage
from schemas.notifications import NotificationBase
from schemas.reasons import DecisionReason, DeliveryReason, RejectReason, reason_of
from schemas.status import DeliveryStatus, Outcome, StatusReason
from schemas.users import UserProfile
from streams.delivery.answers import Answer
from streams.delivery.dedup import already_delivered, entry_key
from streams.delivery.failover import Attempt, Sent
from streams.delivery.hygiene import Hygiene
from streams.delivery.retry_policy import RetryPolicy
from streams.effects import Effects, Record, Rejected, TableWrite

N = TypeVar("N", bound=NotificationBase)

NO_PROVIDER = "-"  # the status's provider when no provider was involved (skipped, dead-lettered)


@dataclass(frozen=True)
class ChannelSpec(Generic[N]):
    """What a channel's step knows besides the notification, fixed when the channel is wired."""

    channel: Channel
    model: type[N]
    policy: RetryPolicy
    retry_topics: tuple[str, ...]  # tier 1 first, `policy.tiers` of them
    users_topic: str  # where profile updates go (token hygiene)
    dedup_retention_seconds: float
    hygiene: Hygiene[N] | None = None

    @property
    def stage(self) -> DeadLetterStage:
        """The dead-letter stage of this channel's agents."""
        return DeadLetterStage.delivery(self.channel)


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD_LETTERED = "dead_lettered"
    SKIPPED = "skipped"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Decision:
    """What becomes of one notification: its effects, and what its agent counts and logs of it (bounded
    label values only)."""

    effects: Effects
    verdict: Verdict
    reason: DecisionReason | DeadLetterReason | None = None  # why it was skipped, retried or dead-lettered
    attempts: tuple[Attempt, ...] = ()  # the provider calls made (herald_provider_attempts_total, latency)
    addresses_removed: int = 0


def parse(spec: ChannelSpec[N], value: bytes | None) -> N | Decision:
    """The notification, or its way to the DLQ when the bytes are not one of this channel's."""
    try:
        return spec.model.model_validate_json(value or b"")
    except ValidationError as exc:
        return reject(
            spec, InvalidEvent(describe_validation_error(exc), reason=RejectReason.INVALID_NOTIFICATION)
        )


def reject(spec: ChannelSpec[N], error: BaseException) -> Decision:
    """The message goes to the DLQ as it is, e.g. for an error no step foresaw (reason `internal_error`)."""
    return Decision(Effects(rejected=[Rejected(error, spec.stage)]), Verdict.REJECTED, reason_of(error))


def check_duplicate(
    spec: ChannelSpec[N], notification: N, delivered_at: float | None, now: datetime
) -> Decision | None:
    """A SKIPPED status if this notification was delivered to its recipient within the retention
    (`delivered_at`: when, from the delivered-ids table), else None: it is to be sent."""
    if not already_delivered(delivered_at, now.timestamp(), spec.dedup_retention_seconds):
        return None
    duplicate = DecisionReason.DUPLICATE
    skipped = _status(spec, notification, now, NO_PROVIDER, Outcome.SKIPPED, reason=duplicate)
    return Decision(Effects(statuses=[skipped]), Verdict.SKIPPED, duplicate)


def conclude(
    spec: ChannelSpec[N],
    notification: N,
    answer: Answer,
    *,
    profile: UserProfile | None,
    now: datetime,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """What follows the providers' answer. `profile` is the recipient's as stored now (read after the
    answer); `rand` draws the retry delay's jitter.

    Statuses: one per attempt, failed ones first, then those a provider accepted (a partial push delivered
    to some devices is recorded too), then a DEAD_LETTERED one if it ends on the DLQ."""
    failed = [a for a in answer.attempts if a.error is not None]
    accepted = [a for a in answer.attempts if a.error is None]
    effects = Effects(statuses=[_attempt_status(spec, notification, now, a) for a in failed + accepted])
    removal = spec.hygiene(notification, answer, profile) if spec.hygiene is not None else None
    if removal is not None:
        effects.records.append(Record.of(spec.users_topic, removal.update.user_id, removal.update))
    removed = removal.removed if removal is not None else 0

    outcome = answer.outcome
    if isinstance(outcome, Sent):
        # One entry per notification, of constant size whatever the recipient's history.
        key = entry_key(notification.recipient, notification.notification_id)
        effects.writes.append(TableWrite("delivered", key, now.timestamp()))
        return Decision(effects, Verdict.DELIVERED, None, answer.attempts, removed)
    if isinstance(outcome, RetriableDeliveryError):
        if spec.policy.exhausted(notification.attempt):
            gave_up = RetriableDeliveryError(
                f"gave up after {notification.attempt} attempts: {outcome.detail}",
                reason=DeliveryReason.RETRIES_EXHAUSTED,
                provider_code=outcome.provider_code,
            )
            _dead_letter(spec, notification, now, gave_up, effects)
            return Decision(effects, Verdict.DEAD_LETTERED, gave_up.reason, answer.attempts, removed)
        effects.records.append(_retry(spec, notification, outcome, now, rand))
        return Decision(effects, Verdict.RETRY, outcome.reason, answer.attempts, removed)
    _dead_letter(spec, notification, now, outcome, effects)
    return Decision(effects, Verdict.DEAD_LETTERED, outcome.reason, answer.attempts, removed)


def _retry(
    spec: ChannelSpec[N],
    notification: N,
    error: RetriableDeliveryError,
    now: datetime,
    rand: Callable[[], float],
) -> Record:
    """The next attempt, on the retry tier that holds it, not before its backoff (a provider's Retry-After is
    a floor). A partial push retries only the devices that were not reached (`retry_with`)."""
    next_attempt = notification.attempt + 1
    base = error.retry_with if isinstance(error.retry_with, NotificationBase) else notification
    delay = spec.policy.delay(notification.attempt, retry_after=error.retry_after, rand=rand)
    retry = base.model_copy(update={"attempt": next_attempt, "not_before": now + timedelta(seconds=delay)})
    topic = spec.retry_topics[spec.policy.tier_for(next_attempt) - 1]
    return Record.of(topic, notification.recipient, retry)


def _dead_letter(
    spec: ChannelSpec[N], notification: N, now: datetime, error: DeliveryError, effects: Effects
) -> None:
    effects.rejected.append(Rejected(error, spec.stage))
    effects.statuses.append(
        _status(
            spec,
            notification,
            now,
            NO_PROVIDER,
            Outcome.DEAD_LETTERED,
            reason=error.reason,
            provider_code=error.provider_code,
        )
    )


def _attempt_status(spec: ChannelSpec[N], notification: N, now: datetime, attempt: Attempt) -> DeliveryStatus:
    error = attempt.error
    return _status(
        spec,
        notification,
        now,
        attempt.provider,
        Outcome.DELIVERED if error is None else Outcome.FAILED,
        latency=attempt.latency_seconds,
        provider_message_id=attempt.provider_message_id,
        reason=error.reason if error else None,
        provider_code=error.provider_code if error else None,
    )


def _status(
    spec: ChannelSpec[N],
    notification: N,
    now: datetime,
    provider: str,
    outcome: Outcome,
    *,
    latency: float | None = None,
    provider_message_id: str | None = None,
    reason: StatusReason | None = None,
    provider_code: str | None = None,
) -> DeliveryStatus:
    return DeliveryStatus.of(
        notification,
        spec.channel,
        provider,
        outcome,
        now,
        latency=latency,
        provider_message_id=provider_message_id,
        reason=reason,
        provider_code=provider_code,
    )
