"""The dead-letter record: what could not be processed, where it came from, and why."""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, Field

from schemas.base import Member, WireModel, open_ended
from schemas.channels import Channel
from schemas.reasons import DeliveryReason, RejectReason


class DeadLetterStage(StrEnum):
    """The agent that gave up on a record."""

    INTAKE = "intake"  # a domain event, refused whole
    ROUTE = "route"  # an event for one recipient (or a digest's release), refused whole
    # One channel of a routed event whose template failed; the event's other channels went out.
    ROUTE_INAPP = "route.inapp"
    ROUTE_EMAIL = "route.email"
    ROUTE_PUSH = "route.push"
    ROUTE_SMS = "route.sms"
    DIRECTORY = "directory"  # a user profile
    PREFERENCES = "preferences"
    SCHEDULER = "scheduler"  # a record held on the scheduler's delay topics
    # A notification the channel's delivery agent gave up on.
    EMAIL = "email"
    PUSH = "push"
    SMS = "sms"
    INAPP = "inapp"  # an in-app notification the inbox could not keep
    INBOX_COMMAND = "inbox.command"  # a client's read/archive change

    @classmethod
    def route(cls, channel: Channel) -> DeadLetterStage:
        return cls(f"{cls.ROUTE.value}.{channel.value}")

    @classmethod
    def delivery(cls, channel: Channel) -> DeadLetterStage:
        return cls(channel.value)


# The input could not be processed, or a provider refused the notification (or delivery gave up on it).
DeadLetterReason = RejectReason | DeliveryReason


class DeadLetter(WireModel):
    topic: str
    partition: int
    offset: int
    key_b64: str | None = None
    original_b64: str  # the message bytes exactly as consumed, base64 so any bytes survive JSON
    # Set when the original was too large to carry whole: original_b64 then holds its head, and topic,
    # partition and offset say where the whole of it is.
    original_truncated: bool = False
    # Also the label of herald_dead_letters_total, with the stage.
    reason: Annotated[Member[RejectReason] | Member[DeliveryReason], Field(json_schema_extra=open_ended)]
    detail: (
        str  # what a person needs to fix it: the field at fault, the template error, the provider's answer
    )
    error_class: str
    stage: Annotated[Member[DeadLetterStage], Field(json_schema_extra=open_ended)]
    at: AwareDatetime

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)
