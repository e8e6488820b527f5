"""Delivery status records written to `herald.status`: one per attempt or decision."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, Field

from schemas.base import WireModel
from schemas.channels import Channel


class Outcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    SKIPPED = "skipped"
    DEFERRED = "deferred"


class DeliveryStatus(WireModel):
    notification_id: str
    event_id: str
    recipient: str
    channel: Channel
    provider: str
    outcome: Outcome
    attempt: int = Field(ge=1)
    at: AwareDatetime
    latency_seconds: float | None = None
    provider_message_id: str | None = None
    reason: str | None = None
    provider_code: str | None = None
