"""The router's two agents: intake (validate, find the rule, fan out per recipient, re-keyed by user id) and
routing (meet the recipient's profile on the worker that holds it, render, produce to delivery topics)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError

from kernel.errors import InvalidEvent, UnknownUser
from schemas.base import describe_validation_error
from schemas.channels import Channel
from schemas.events import DigestRelease, DomainEvent, RecipientEvent, Routed
from schemas.notifications import NotificationBase, notification_id
from schemas.preferences import Preferences
from schemas.rules import Rule, parse_duration
from schemas.status import DeliveryStatus, Outcome
from schemas.users import UserProfile
from streams.routing.digests import add as add_to_digest
from streams.routing.digests import bucket_of, summary_event
from streams.routing.planning import Deferred, Failed, Plan, Skipped, plan_notifications
from streams.routing.throttling import check, scope_key
from streams.routing.throttling import record as record_send
from streams.runtime.context import WorkerContext, bind_event

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
    settings = ctx.settings

    @app.agent(ctx.topics.events, name="herald.intake")
    async def intake(stream: Any) -> AsyncIterator[None]:
        # In batches: Faust's hand-off per message, not CPU, is what costs, so each batch's records are
        # produced without waiting on each and acknowledged together (see WorkerContext.batch).
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            await ctx.settle("intake", partial(_intake_batch, ctx, events))
            yield None

    @app.agent(ctx.topics.routed, name="herald.route")
    async def route(stream: Any) -> AsyncIterator[None]:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            await ctx.settle("route", partial(_route_batch, ctx, events))
            yield None


async def _intake_batch(ctx: WorkerContext, events: list[Any]) -> None:
    for event in events:
        await _intake_one(ctx, event.message)


async def _route_batch(ctx: WorkerContext, events: list[Any]) -> None:
    for event in events:
        bind_event(event)
        await _route_message(ctx, event.message)


async def _intake_one(ctx: WorkerContext, message: Any) -> None:
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


async def _route_message(ctx: WorkerContext, message: Any) -> None:
    try:
        failures = await _route_one(ctx, message.value)
    except Exception as exc:
        ctx.metrics.events_rejected.labels(reason=getattr(exc, "reason", "internal_error")).inc()
        await ctx.to_dead_letters(message, exc, stage="route")
        return
    # A channel whose template failed is parked on its own; the channels that rendered went out.
    for failed in failures:
        ctx.metrics.notifications_skipped.labels(
            channel=failed.channel.value, reason=failed.error.reason
        ).inc()
        await ctx.to_dead_letters(message, failed.error, stage=f"route.{failed.channel.value}")


# Routed is an Annotated discriminated union; TypeAdapter's typing does not follow Annotated, hence the cast.
_routed: TypeAdapter[RecipientEvent | DigestRelease] = TypeAdapter(cast(Any, Routed))


def parse_routed(raw: bytes) -> RecipientEvent | DigestRelease:
    try:
        return _routed.validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(describe_validation_error(exc)) from None


async def _route_one(ctx: WorkerContext, raw: bytes) -> list[Failed]:
    item = parse_routed(raw)
    recipient = item.recipient
    stored = ctx.users.get(recipient)
    if stored is None:
        raise UnknownUser(f"no profile for recipient {recipient!r}")
    profile = ctx.parsed(UserProfile, stored)
    stored_preferences = ctx.preferences.get(recipient)
    preferences = ctx.parsed(Preferences, stored_preferences) if stored_preferences else None
    extra: dict[str, Any] = {}
    if isinstance(item, DigestRelease):
        buckets = dict(ctx.digests.get(recipient) or {})
        content = buckets.pop(item.bucket, None)
        if content is None:
            return []  # already released (a replay of the release record)
        ctx.digests[recipient] = buckets
        rule, domain_event, extra["digest"] = summary_event(recipient, item.bucket, content)
    else:
        domain_event = item.event
        rule = ctx.rules.book.match(domain_event.type, domain_event.data)
        if rule.digest is not None:
            await _collect(ctx, rule, domain_event, profile)
            return []
    plan = plan_notifications(domain_event, profile, rule, ctx.templates, ctx.clock(), preferences, extra)
    if rule.throttle is not None:
        _throttle(ctx, plan, rule, recipient)
    await _publish(ctx, plan, rule, domain_event, recipient)
    return plan.failed


async def _collect(ctx: WorkerContext, rule: Rule, event: DomainEvent, profile: UserProfile) -> None:
    """Add the event to the recipient's digest; the first event of a bucket schedules its release."""
    recipient = profile.user_id
    bucket = bucket_of(rule, event)
    buckets, opened = add_to_digest(
        ctx.digests.get(recipient), bucket, rule, event, ctx.clock(), profile.timezone
    )
    ctx.digests[recipient] = buckets
    for channel in rule.channels:
        ctx.metrics.notifications_deferred.labels(channel=channel.value, reason="digest").inc()
        nid = notification_id(event.dedup_key, recipient, channel)
        await _status(ctx, nid, event, recipient, channel, Outcome.DEFERRED, "digest")
    if opened is not None:
        release = DigestRelease(recipient=recipient, bucket=bucket)
        await ctx.scheduler.schedule(
            opened, ctx.topics.routed, recipient.encode(), release.to_json(), reason="digest"
        )


def _throttle(ctx: WorkerContext, plan: Plan, rule: Rule, recipient: str) -> None:
    """Hold the plan's notifications to the rule's limit: the excess is dropped or deferred, as it says."""
    throttle = rule.throttle
    assert throttle is not None
    now = ctx.clock().timestamp()
    state = ctx.throttles.get(recipient)
    kept: list[NotificationBase] = []
    for notification in plan.notifications:
        key = scope_key(throttle, notification.channel.value, rule.category)
        verdict = check((state or {}).get(key, []), throttle, now)
        if verdict.allowed:
            state = record_send(state, key, now, ctx.settings.throttle_memory_seconds)
            kept.append(notification)
        elif throttle.excess == "defer" and verdict.free_at is not None:
            free_at = datetime.fromtimestamp(verdict.free_at, UTC)
            plan.deferred.append(Deferred(notification, free_at, "throttle"))
        else:
            plan.skipped.append(Skipped(notification.channel, "throttled", notification.notification_id))
    plan.notifications = kept
    if state is not None:
        ctx.throttles[recipient] = state


async def _publish(
    ctx: WorkerContext, plan: Plan, rule: Rule, domain_event: DomainEvent, recipient: str
) -> None:
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
        await _status(
            ctx,
            held.notification_id,
            domain_event,
            recipient,
            held.channel,
            Outcome.DEFERRED,
            deferred.reason,
        )
    for skipped in plan.skipped:
        ctx.metrics.notifications_skipped.labels(channel=skipped.channel.value, reason=skipped.reason).inc()
        await _status(
            ctx,
            skipped.notification_id,
            domain_event,
            recipient,
            skipped.channel,
            Outcome.SKIPPED,
            skipped.reason,
        )


async def _status(
    ctx: WorkerContext,
    notification_id: str,
    domain_event: DomainEvent,
    recipient: str,
    channel: Channel,
    outcome: Outcome,
    reason: str,
) -> None:
    await ctx.send_status(
        DeliveryStatus(
            notification_id=notification_id,
            event_id=domain_event.event_id,
            recipient=recipient,
            channel=channel,
            provider="-",
            outcome=outcome,
            attempt=1,
            at=ctx.clock(),
            reason=reason,
        )
    )
