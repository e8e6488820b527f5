"""Delivery status records written to `herald.status`: one per attempt or decision."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, Field

from schemas.base import Member, WireModel, open_ended
from schemas.channels import Channel
from schemas.reasons import DecisionReason, DeliveryReason


class Outcome(StrEnum):
    DELIVERED = "delivered"  # a provider accepted it
    FAILED = "failed"  # an attempt failed; it will be retried
    DEAD_LETTERED = "dead_lettered"  # given up on: the record is on the dead-letter topic
    SKIPPED = "skipped"  # not sent, and it will not be (a DecisionReason says why)
    DEFERRED = "deferred"  # held back, to be sent later (a DecisionReason says why)


# Herald's own decisions for `skipped` and `deferred`, a provider's answer for `failed` and `dead_lettered`.
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
