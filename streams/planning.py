"""Turning one event for one recipient into per-channel notifications. Pure: no Kafka, no clock of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.channels import Channel
from schemas.events import DomainEvent
from schemas.notifications import (
    EmailNotification,
    InAppNotification,
    NotificationBase,
    PushNotification,
    SmsNotification,
    notification_id,
)
from schemas.rules import Rule
from schemas.users import UserProfile
from streams.errors import TemplateFailure
from streams.rendering import TemplateStore


@dataclass(frozen=True)
class Skipped:
    channel: Channel
    reason: str  # bounded: "no_address", "channel_disabled", "no_provider"
    notification_id: str


@dataclass(frozen=True)
class Failed:
    channel: Channel
    error: TemplateFailure
    notification_id: str


@dataclass
class Plan:
    notifications: list[NotificationBase] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)


def template_context(event: DomainEvent, profile: UserProfile) -> dict[str, Any]:
    """What a template sees: the event's data, its envelope, and the recipient's public profile."""
    return {
        "data": event.data,
        "event": {"id": event.event_id, "type": event.type, "occurred_at": event.occurred_at},
        "recipient": {
            "id": profile.user_id,
            "name": profile.display_name or profile.user_id,
            "locale": profile.locale,
            "timezone": profile.timezone,
        },
    }


def plan_notifications(
    event: DomainEvent,
    profile: UserProfile,
    rule: Rule,
    templates: TemplateStore,
    now: datetime,
) -> Plan:
    plan = Plan()
    context = template_context(event, profile)
    chosen = _fallback_choice(rule, profile)
    for channel, route in rule.channels.items():
        nid = notification_id(event.dedup_key, profile.user_id, channel)
        if chosen is not None and channel is not chosen:
            plan.skipped.append(Skipped(channel, "fallback_not_needed", nid))
            continue
        address = _address(channel, profile)
        if address is _NO_ADDRESS:
            plan.skipped.append(Skipped(channel, "no_address", nid))
            continue
        if address is _DISABLED:
            plan.skipped.append(Skipped(channel, "channel_disabled", nid))
            continue
        try:
            parts = templates.render(route.template, channel, profile.locale, context)
        except TemplateFailure as exc:
            plan.failed.append(Failed(channel, exc, nid))
            continue
        common: dict[str, Any] = {
            "notification_id": nid,
            "event_id": event.event_id,
            "event_type": event.type,
            "recipient": profile.user_id,
            "occurred_at": event.occurred_at,
            "created_at": now,
            "priority": event.priority,
        }
        message: NotificationBase
        if channel is Channel.INAPP:
            message = InAppNotification(
                **common,
                title=parts["title"],
                body=parts["body"],
                action_url=parts.get("action_url") or None,
                data=event.data,
            )
        elif channel is Channel.EMAIL:
            assert isinstance(address, str)
            message = EmailNotification(
                **common, to=address, subject=parts["subject"], text=parts["text"], html=parts.get("html")
            )
        elif channel is Channel.PUSH:
            assert isinstance(address, list)
            message = PushNotification(**common, devices=address, title=parts["title"], body=parts["body"])
        else:
            assert isinstance(address, str)
            message = SmsNotification(**common, to=address, text=parts["text"])
        plan.notifications.append(message)
    return plan


def _fallback_choice(rule: Rule, profile: UserProfile) -> Channel | None:
    """With a fallback list, the first of its channels the recipient can be reached on (None: route to all
    of the rule's channels; the last of the list when none can, so the skip records why)."""
    if not rule.fallback:
        return None
    for channel in rule.fallback:
        address = _address(channel, profile)
        if address is not _NO_ADDRESS and address is not _DISABLED:
            return channel
    return rule.fallback[-1]


_NO_ADDRESS = object()
_DISABLED = object()


def _address(channel: Channel, profile: UserProfile) -> object:
    if channel is Channel.INAPP:
        return profile.user_id if profile.inapp_enabled else _DISABLED
    if channel is Channel.EMAIL:
        return profile.email or _NO_ADDRESS
    if channel is Channel.SMS:
        return profile.phone or _NO_ADDRESS
    return list(profile.devices) or _NO_ADDRESS
