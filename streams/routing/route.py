"""The route step: one routed record (an event for one recipient, a digest's release, or an escalation step
come due) met with that recipient's state, turned into notifications on the channel topics, held ones, status
records, and the recipient's new digest and throttle records."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError

from kernel.errors import InvalidEvent, UnknownUser
from kernel.privacy import pseudonym
from kernel.topics import TopicNames
from schemas.base import describe_validation_error
from schemas.channels import Channel
from schemas.deadletter import DeadLetterStage
from schemas.events import DigestRelease, DomainEvent, RecipientEvent
from schemas.notifications import NotificationBase, notification_id
from schemas.preferences import Preferences
from schemas.reasons import DecisionReason
from schemas.routed import EscalationDue, Routed
from schemas.rules import Rule, parse_duration
from schemas.status import DeliveryStatus, Outcome
from schemas.users import UserProfile
from streams.effects import Effects, Later, Record, Rejected, TableWrite
from streams.routing import escalation
from streams.routing.digests import add as add_to_digest
from streams.routing.digests import bucket_of, summary_event
from streams.routing.planning import Deferred, Plan, Skipped, plan_notifications
from streams.routing.rendering import TemplateStore
from streams.routing.result import StepResult, Tally, reject
from streams.routing.rules import RuleBook
from streams.routing.throttling import check, scope_key
from streams.routing.throttling import record as record_send

STAGE = DeadLetterStage.ROUTE

# Routed is an Annotated discriminated union; TypeAdapter's typing does not follow Annotated, hence the cast.
RoutedRecord = RecipientEvent | DigestRelease | EscalationDue
_routed: TypeAdapter[RoutedRecord] = TypeAdapter(cast(Any, Routed))


def parse_routed(raw: bytes | None) -> RoutedRecord:
    if raw is None:
        raise InvalidEvent("empty message")
    try:
        return _routed.validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(describe_validation_error(exc)) from None


def recipient_key(key: bytes | None) -> str:
    """The user id a routed record is keyed by; empty for a record without a key (no user has that id)."""
    return "" if key is None else key.decode(errors="replace")


@dataclass(frozen=True)
class RecipientState:
    """What the worker holds for the user a routed record is keyed by, read before the step runs."""

    user_id: str
    profile: UserProfile | None
    preferences: Preferences | None = None
    digests: Mapping[str, Any] | None = None  # {bucket: {rule, due, count, events}}
    throttles: Mapping[str, Sequence[float]] | None = None  # {scope key: [send times (epoch s)]}
    # The user's inbox index as stored (streams.inbox.model), read when asked: only escalation steps need it.
    inbox: Callable[[], Any] | None = None


def route(
    raw: bytes | None,
    state: RecipientState,
    *,
    rules: RuleBook,
    templates: TemplateStore,
    topics: TopicNames,
    now: datetime,
    throttle_memory_seconds: float,
) -> StepResult:
    """What becomes of one routed record. Bad input (or an unknown user) is rejected whole at stage `route`;
    a channel whose template fails is rejected alone at stage `route.<channel>` while the others go."""
    try:
        item = parse_routed(raw)
    except Exception as exc:  # whatever the cause, the input is parked rather than retried forever
        return reject(exc, STAGE)
    return route_item(
        item,
        state,
        rules=rules,
        templates=templates,
        topics=topics,
        now=now,
        throttle_memory_seconds=throttle_memory_seconds,
    )


def route_item(
    item: RoutedRecord,
    state: RecipientState,
    *,
    rules: RuleBook,
    templates: TemplateStore,
    topics: TopicNames,
    now: datetime,
    throttle_memory_seconds: float,
) -> StepResult:
    """`route` for a record already parsed (or an event intake kept for the route step, `intake.take`)."""
    try:
        if item.recipient != state.user_id:
            # Keyed otherwise, it sits on a partition where the recipient's state is not.
            raise InvalidEvent("a routed record must be keyed by its recipient's user id")
        if state.profile is None:
            raise UnknownUser(f"no profile for recipient {pseudonym(item.recipient)}")
        return _route(item, state, state.profile, rules, templates, topics, now, throttle_memory_seconds)
    except Exception as exc:  # whatever the cause, the input is parked rather than retried forever
        return reject(exc, STAGE)


def _route(
    item: RoutedRecord,
    state: RecipientState,
    profile: UserProfile,
    rules: RuleBook,
    templates: TemplateStore,
    topics: TopicNames,
    now: datetime,
    throttle_memory_seconds: float,
) -> StepResult:
    result = StepResult(Effects(), Tally())
    recipient = state.user_id
    extra: dict[str, Any] = {}
    if isinstance(item, DigestRelease):
        buckets = dict(state.digests or {})
        content = buckets.pop(item.bucket, None)
        if content is None:
            return result  # already released (a replay of the release record)
        result.effects.writes.append(TableWrite("digests", recipient, buckets or None))
        rule, event, extra["digest"] = summary_event(recipient, item.bucket, content)
    elif isinstance(item, EscalationDue):
        if escalation.was_read(state.inbox() if state.inbox else None, item.watch):
            _cancel(result, item, now)
            return result
        rule, event = item.rule, item.event
    else:
        event = item.event
        rule = rules.match(event.type, event.data)
        if rule.digest is not None:
            _collect(result, rule, event, profile, state.digests, topics, now)
            return result
    plan = plan_notifications(
        event, profile, escalation.at_once(rule), templates, now, state.preferences, extra
    )
    if rule.throttle is not None:
        plan, throttles = _throttle(plan, rule, state.throttles, now, throttle_memory_seconds)
        if throttles is not None:
            result.effects.writes.append(TableWrite("throttles", recipient, throttles))
    _publish(result, plan, rule, event, recipient, topics, now)
    if rule.escalate:
        _escalate(result, plan, rule, event, recipient, topics, now)
    return result


def _escalate(
    result: StepResult,
    plan: Plan,
    rule: Rule,
    event: DomainEvent,
    recipient: str,
    topics: TopicNames,
    now: datetime,
) -> None:
    """Each escalation step waits on the scheduler, addressed back to this step, from when the in-app
    notification goes out; its channel's status says `deferred` (`escalation`) meanwhile."""
    start = escalation.started(plan, rule, now)
    for due, step in escalation.steps_due(rule, event, recipient, start):
        reason = DecisionReason.ESCALATION
        result.effects.later.append(Later(due, Record.of(topics.routed, recipient, step), reason))
        result.tally.deferred.append((step.channel, reason))
        nid = notification_id(event.dedup_key, recipient, step.channel)
        result.effects.statuses.append(
            _status(nid, event, recipient, step.channel, Outcome.DEFERRED, reason, now)
        )


def _cancel(result: StepResult, step: EscalationDue, now: datetime) -> None:
    """A step come due after the recipient read the in-app notification: nothing is sent on its channel."""
    reason = DecisionReason.CANCELLED_READ
    nid = notification_id(step.event.dedup_key, step.recipient, step.channel)
    result.tally.skipped.append((step.channel, reason))
    result.effects.statuses.append(
        _status(nid, step.event, step.recipient, step.channel, Outcome.SKIPPED, reason, now)
    )


def _collect(
    result: StepResult,
    rule: Rule,
    event: DomainEvent,
    profile: UserProfile,
    digests: Mapping[str, Any] | None,
    topics: TopicNames,
    now: datetime,
) -> None:
    """Add the event to the recipient's digest; the first event of a bucket schedules its release."""
    recipient = profile.user_id
    bucket = bucket_of(rule, event)
    # Kept listing its one recipient, whatever list a routed record of an earlier version carried.
    mine = event.model_copy(update={"recipients": [recipient]})
    buckets, opened = add_to_digest(digests, bucket, rule, mine, now, profile.timezone)
    result.effects.writes.append(TableWrite("digests", recipient, buckets))
    for channel in rule.channels:
        result.tally.deferred.append((channel, DecisionReason.DIGEST))
        nid = notification_id(event.dedup_key, recipient, channel)
        result.effects.statuses.append(
            _status(nid, event, recipient, channel, Outcome.DEFERRED, DecisionReason.DIGEST, now)
        )
    if opened is not None:
        release = DigestRelease(recipient=recipient, bucket=bucket)
        result.effects.later.append(
            Later(opened, Record.of(topics.routed, recipient, release), DecisionReason.DIGEST)
        )


def _throttle(
    plan: Plan,
    rule: Rule,
    sent: Mapping[str, Sequence[float]] | None,
    now: datetime,
    memory_seconds: float,
) -> tuple[Plan, dict[str, list[float]] | None]:
    """The plan held to the rule's limit (the excess dropped or deferred, as it says), and the recipient's
    new send record (None when nothing was sent, so nothing to write)."""
    throttle = rule.throttle
    assert throttle is not None
    at = now.timestamp()
    state: Mapping[str, Sequence[float]] | None = sent
    written: dict[str, list[float]] | None = None
    held = Plan(deferred=list(plan.deferred), skipped=list(plan.skipped), failed=plan.failed)
    for notification in plan.notifications:
        key = scope_key(throttle, notification.channel.value, rule.category)
        verdict = check((state or {}).get(key, []), throttle, at)
        if verdict.allowed:
            state = written = record_send(state, key, at, memory_seconds)
            held.notifications.append(notification)
        elif throttle.excess == "defer" and verdict.free_at is not None:
            free_at = datetime.fromtimestamp(verdict.free_at, UTC)
            held.deferred.append(Deferred(notification, free_at, DecisionReason.THROTTLED))
        else:
            held.skipped.append(
                Skipped(notification.channel, DecisionReason.THROTTLED, notification.notification_id)
            )
    return held, written


def _publish(
    result: StepResult,
    plan: Plan,
    rule: Rule,
    event: DomainEvent,
    recipient: str,
    topics: TopicNames,
    now: datetime,
) -> None:
    effects, tally = result
    delay = parse_duration(rule.delay) if rule.delay else 0
    for notification in plan.notifications:
        record = _delivery(topics, recipient, notification)
        if delay:
            effects.later.append(Later(now + timedelta(seconds=delay), record, DecisionReason.DELAY))
            tally.deferred.append((notification.channel, DecisionReason.DELAY))
        else:
            effects.records.append(record)
        tally.routed.append(notification.channel)
    for deferred in plan.deferred:
        held = deferred.notification
        effects.later.append(Later(deferred.until, _delivery(topics, recipient, held), deferred.reason))
        tally.deferred.append((held.channel, deferred.reason))
        effects.statuses.append(
            _status(
                held.notification_id, event, recipient, held.channel, Outcome.DEFERRED, deferred.reason, now
            )
        )
    for skipped in plan.skipped:
        tally.skipped.append((skipped.channel, skipped.reason))
        effects.statuses.append(
            _status(
                skipped.notification_id,
                event,
                recipient,
                skipped.channel,
                Outcome.SKIPPED,
                skipped.reason,
                now,
            )
        )
    # A channel whose template failed is parked on its own; the channels that rendered go out.
    for failed in plan.failed:
        tally.skipped.append((failed.channel, failed.error.reason))
        effects.rejected.append(Rejected(failed.error, DeadLetterStage.route(failed.channel)))


def _delivery(topics: TopicNames, recipient: str, notification: NotificationBase) -> Record:
    return Record.of(topics.delivery[notification.channel], recipient, notification)


def _status(
    nid: str,
    event: DomainEvent,
    recipient: str,
    channel: Channel,
    outcome: Outcome,
    reason: DecisionReason,
    now: datetime,
) -> DeliveryStatus:
    return DeliveryStatus(
        notification_id=nid,
        event_id=event.event_id,
        recipient=recipient,
        channel=channel,
        provider="-",
        outcome=outcome,
        attempt=1,
        at=now,
        reason=reason,
    )
