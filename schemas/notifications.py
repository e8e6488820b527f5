"""Per-channel notification messages, one per (event, recipient, channel), on the delivery topics."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field

from schemas.base import WireModel
from schemas.channels import Channel
from schemas.events import Identifier, Priority, UserId
from schemas.users import Device


def notification_id(dedup_key: str, recipient: str, channel: Channel) -> str:
    """A stable id: the same event, recipient and channel always give the same id, so retries and
    replays can be recognised downstream (and passed to providers as their idempotency key)."""
    digest = hashlib.sha256(f"{dedup_key}\x1f{recipient}\x1f{channel.value}".encode()).hexdigest()
    return f"ntf_{digest[:32]}"


class NotificationBase(WireModel):
    channel: Channel
    notification_id: Identifier
    event_id: Identifier
    event_type: str
    recipient: UserId
    occurred_at: AwareDatetime
    created_at: AwareDatetime
    priority: Priority = Priority.NORMAL
    attempt: int = Field(default=1, ge=1)
    # Set on a retry: the notification is not to be attempted before this instant.
    not_before: AwareDatetime | None = None


class InAppNotification(NotificationBase):
    channel: Literal[Channel.INAPP] = Channel.INAPP
    title: str
    body: str
    action_url: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class EmailNotification(NotificationBase):
    channel: Literal[Channel.EMAIL] = Channel.EMAIL
    to: str
    subject: str
    text: str
    html: str | None = None


class PushNotification(NotificationBase):
    channel: Literal[Channel.PUSH] = Channel.PUSH
    devices: Annotated[list[Device], Field(min_length=1)]
    title: str
    body: str
    data: dict[str, str] = Field(default_factory=dict)


class SmsNotification(NotificationBase):
    channel: Literal[Channel.SMS] = Channel.SMS
    to: str
    text: str
    segments: int | None = None  # parts the text is billed as (GSM-7 or UCS-2)


Notification = Annotated[
    InAppNotification | EmailNotification | PushNotification | SmsNotification,
    Field(discriminator="channel"),
]
