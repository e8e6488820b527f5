"""The domain event envelope that services publish to `herald.events`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from schemas.base import WireModel

EventType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", max_length=200)]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\s\x00-\x1f]+$")]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class DomainEvent(WireModel):
    """Something that happened in a producing service, addressed to one or more users."""

    schema_version: Literal[1] = 1
    event_id: Identifier
    type: EventType
    occurred_at: AwareDatetime
    # How many may be listed is a setting (HERALD_MAX_RECIPIENTS), checked at intake.
    recipients: Annotated[list[UserId], Field(min_length=1)]
    data: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: Identifier | None = None
    priority: Priority = Priority.NORMAL

    @property
    def dedup_key(self) -> str:
        """What makes two deliveries of this event the same: the producer's key, else the event id."""
        return self.idempotency_key or self.event_id


class RecipientEvent(WireModel):
    """A domain event narrowed to one recipient, re-keyed by user id so it meets that user's state. Its
    event lists only that recipient (a record per recipient must not carry them all), and keeps the field so
    a worker of an earlier version reads it."""

    kind: Literal["event"] = "event"
    event: DomainEvent
    recipient: UserId


class DigestRelease(WireModel):
    """The time has come to send a recipient's digest bucket (scheduled when the bucket opened)."""

    kind: Literal["digest_release"] = "digest_release"
    recipient: UserId
    bucket: Annotated[str, StringConstraints(min_length=1, max_length=500)]
