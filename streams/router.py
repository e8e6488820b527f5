"""The router's two agents: intake (validate, find the rule, fan out per recipient, re-keyed by user id) and
routing (meet the recipient's profile on the worker that holds it, render, produce to delivery topics)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from schemas.base import describe_validation_error
from schemas.events import DomainEvent, RecipientEvent
from schemas.preferences import Preferences
from schemas.rules import parse_duration
from schemas.status import DeliveryStatus, Outcome
from schemas.users import UserProfile
from streams.context import WorkerContext
from streams.errors import InvalidEvent, UnknownUser
from streams.planning import Failed, plan_notifications

log = logging.getLogger("herald.router")


def parse_event(raw: bytes | None) -> DomainEvent:
    if raw is None:
        raise InvalidEvent("empty message")
    try:
        return DomainEvent.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(describe_validation_error(exc)) from None


def register_router(ctx: WorkerContext) -> None:
    app = ctx.app

    @app.agent(ctx.topics.events, name="herald.intake")
    async def intake(stream: Any) -> AsyncIterator[None]:
        async for event in stream.events():
            message = event.message
            ctx.metrics.events_consumed.inc()
            try:
                domain_event = parse_event(message.value)
                # Checked before fan-out so an unroutable event is one DLQ record, not one per recipient.
                ctx.rules.book.match(domain_event.type, domain_event.data)
                for recipient in dict.fromkeys(domain_event.recipients):
                    await ctx.send(
                        ctx.topics.routed, recipient, RecipientEvent(event=domain_event, recipient=recipient)
                    )
            except Exception as exc:
                ctx.metrics.events_rejected.labels(reason=getattr(exc, "reason", "internal_error")).inc()
                await ctx.to_dead_letters(message, exc, stage="intake")
            yield None

    @app.agent(ctx.topics.routed, name="herald.route")
    async def route(stream: Any) -> AsyncIterator[None]:
        async for event in stream.events():
            message = event.message
            try:
                failures = await _route_one(ctx, message.value)
            except Exception as exc:
                ctx.metrics.events_rejected.labels(reason=getattr(exc, "reason", "internal_error")).inc()
                await ctx.to_dead_letters(message, exc, stage="route")
                failures = []
            # A channel whose template failed is parked on its own; the channels that rendered went out.
            for failed in failures:
                ctx.metrics.notifications_skipped.labels(
                    channel=failed.channel.value, reason=failed.error.reason
                ).inc()
                await ctx.to_dead_letters(message, failed.error, stage=f"route.{failed.channel.value}")
            yield None


async def _route_one(ctx: WorkerContext, raw: bytes) -> list[Failed]:
    item = RecipientEvent.model_validate_json(raw)
    domain_event, recipient = item.event, item.recipient
    stored = ctx.users.get(recipient)
    if stored is None:
        raise UnknownUser(f"no profile for recipient {recipient!r}")
    profile = UserProfile.model_validate(stored, strict=False)
    stored_preferences = ctx.preferences.get(recipient)
    preferences = Preferences.model_validate(stored_preferences, strict=False) if stored_preferences else None
    rule = ctx.rules.book.match(domain_event.type, domain_event.data)
    plan = plan_notifications(domain_event, profile, rule, ctx.templates, ctx.clock(), preferences)
    delay = parse_duration(rule.delay) if rule.delay else 0
    for notification in plan.notifications:
        topic = ctx.channel_topic(notification.channel)
        if delay:
            due = ctx.clock() + timedelta(seconds=delay)
            await ctx.scheduler.schedule(
                due, topic, recipient.encode(), notification.to_json(), reason="delay"
            )
            ctx.metrics.notifications_deferred.labels(
                channel=notification.channel.value, reason="delay"
            ).inc()
        else:
            await ctx.send(topic, recipient, notification)
        ctx.metrics.notifications_routed.labels(channel=notification.channel.value).inc()
    for deferred in plan.deferred:
        held = deferred.notification
        await ctx.scheduler.schedule(
            deferred.until,
            ctx.channel_topic(held.channel),
            recipient.encode(),
            held.to_json(),
            reason=deferred.reason,
        )
        ctx.metrics.notifications_deferred.labels(channel=held.channel.value, reason=deferred.reason).inc()
        await ctx.send_status(
            DeliveryStatus(
                notification_id=held.notification_id,
                event_id=domain_event.event_id,
                recipient=recipient,
                channel=held.channel,
                provider="-",
                outcome=Outcome.DEFERRED,
                attempt=1,
                at=ctx.clock(),
                reason=deferred.reason,
            )
        )
    for skipped in plan.skipped:
        ctx.metrics.notifications_skipped.labels(channel=skipped.channel.value, reason=skipped.reason).inc()
        await ctx.send_status(
            DeliveryStatus(
                notification_id=skipped.notification_id,
                event_id=domain_event.event_id,
                recipient=recipient,
                channel=skipped.channel,
                provider="-",
                outcome=Outcome.SKIPPED,
                attempt=1,
                at=ctx.clock(),
                reason=skipped.reason,
            )
        )
    return plan.failed
