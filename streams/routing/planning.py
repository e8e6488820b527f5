"""Turning one event for one recipient into per-channel notifications. Pure: no Kafka, no clock of its own."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kernel.errors import TemplateFailure
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
from schemas.preferences import Preferences
from schemas.reasons import DecisionReason
from schemas.rules import Rule
from schemas.users import UserProfile
from streams.routing.preferences import Defer, Suppress, decide_for_rule
from streams.routing.rendering import TemplateStore
from streams.routing.rules import pick
from streams.routing.sms_segments import count_segments


@dataclass(frozen=True)
class Skipped:
    channel: Channel
    reason: DecisionReason  # one of SKIP_REASONS
    notification_id: str


@dataclass(frozen=True)
class Failed:
    channel: Channel
    error: TemplateFailure
    notification_id: str


@dataclass(frozen=True)
class Deferred:
    notification: NotificationBase
    until: datetime
    reason: DecisionReason  # one of DEFER_REASONS


@dataclass
class Plan:
    notifications: list[NotificationBase] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)
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
    preferences: Preferences | None = None,
    extra_context: Mapping[str, Any] | None = None,
) -> Plan:
    plan = Plan()
    context = {**template_context(event, profile), **(extra_context or {})}
    decisions = decide_for_rule(rule, profile, preferences, now)
    for channel, route in rule.channels.items():
        nid = notification_id(event.dedup_key, profile.user_id, channel)
        decision = decisions[channel]
        if isinstance(decision, Suppress):
            plan.skipped.append(Skipped(channel, decision.reason, nid))
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
            "priority": rule.priority or event.priority,
        }
        message: NotificationBase
        if channel is Channel.INAPP:
            message = InAppNotification(
                **common,
                title=parts["title"],
                body=parts["body"],
                action_url=parts.get("action_url") or None,
                # Not the event's data: only the fields the rule makes public reach the client.
                data=pick(event.data, rule.public),
            )
        elif channel is Channel.EMAIL:
            assert profile.email is not None
            message = EmailNotification(
                **common,
                to=profile.email,
                subject=parts["subject"],
                text=parts["text"],
                html=parts.get("html"),
            )
        elif channel is Channel.PUSH:
            message = PushNotification(
                **common, devices=list(profile.devices), title=parts["title"], body=parts["body"]
            )
        else:
            assert profile.phone is not None
            text = parts["text"]
            message = SmsNotification(
                **common, to=profile.phone, text=text, segments=count_segments(text).segments
            )
        if isinstance(decision, Defer):
            plan.deferred.append(Deferred(message, decision.until, decision.reason))
        else:
            plan.notifications.append(message)
    return plan
