"""Delivery status records written to `herald.status`: one per attempt or decision."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Final

from pydantic import AwareDatetime, Field

from schemas.base import Member, WireModel, open_ended
from schemas.channels import Channel
from schemas.reasons import DecisionReason, DeliveryReason

if TYPE_CHECKING:
    from schemas.notifications import NotificationBase


class Outcome(StrEnum):
    DELIVERED = "delivered"  # a provider accepted it
    FAILED = "failed"  # an attempt failed; it will be retried
    DEAD_LETTERED = "dead_lettered"  # given up on: the record is on the dead-letter topic
    SKIPPED = "skipped"  # not sent, and it will not be (a DecisionReason says why)
    DEFERRED = "deferred"  # held back, to be sent later (a DecisionReason says why)
    # Delivery receipts: what a provider later reported of a message it accepted (streams/ops/receipts.py).
    PROVIDER_DEFERRED = "provider_deferred"  # the provider is still trying (the receiving server said later)
    PROVIDER_DELIVERED = "provider_delivered"  # the handset or the receiving mail server took it
    PROVIDER_FAILED = "provider_failed"  # the provider gave up on it (a DeliveryReason says why)
    OPENED = "opened"  # the recipient opened or read it
    CLICKED = "clicked"  # the recipient followed a link in it
    READ = "read"  # an in-app notification the recipient marked read (on any of their clients)


# The receipt outcomes by rank: per notification, a receipt is written only above the highest rank written so
# far, so a replay or a late, weaker report (deferred after delivered) never follows a stronger one.
RECEIPT_RANKS: Final[dict[Outcome, int]] = {
    Outcome.PROVIDER_DEFERRED: 1,
    Outcome.PROVIDER_DELIVERED: 2,
    Outcome.PROVIDER_FAILED: 3,  # a bounce may follow a delivery: the receiving server gave up after all
    Outcome.OPENED: 4,
    Outcome.CLICKED: 5,
}


# Herald's own decisions for `skipped` and `deferred`, a provider's answer for `failed`, `dead_lettered` and
# `provider_failed`.
StatusReason = DecisionReason | DeliveryReason


class DeliveryStatus(WireModel):
    notification_id: str
    event_id: str
    recipient: str
    channel: Channel
    provider: str
    outcome: Annotated[Member[Outcome], Field(json_schema_extra=open_ended)]
    attempt: int = Field(ge=1)
    at: AwareDatetime
    latency_seconds: float | None = None
    provider_message_id: str | None = None
    reason: Annotated[
        Member[DecisionReason] | Member[DeliveryReason] | None, Field(json_schema_extra=open_ended)
    ] = None
    provider_code: str | None = None

    @classmethod
    def of(
        cls,
        notification: NotificationBase,
        channel: Channel,
        provider: str,
        outcome: Outcome,
        at: datetime,
        *,
        latency: float | None = None,
        provider_message_id: str | None = None,
        reason: StatusReason | None = None,
        provider_code: str | None = None,
    ) -> DeliveryStatus:
        """The status of `notification`'s current attempt on `channel`."""
        return cls(
            notification_id=notification.notification_id,
            event_id=notification.event_id,
            recipient=notification.recipient,
            channel=channel,
            provider=provider,
            outcome=outcome,
            attempt=notification.attempt,
            at=at,
            latency_seconds=latency,
            provider_message_id=provider_message_id,
            reason=reason,
            provider_code=provider_code,
        )
