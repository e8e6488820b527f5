"""Escalate if unread: a rule's in-app notification goes at once, and each step of its `escalate` waits on the
scheduler, then goes on its channel only if the recipient has not read the in-app notification by then, on
any device (the inbox table is the one record of what was read). Pure functions over the rule and the plan."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from schemas.channels import Channel
from schemas.events import DomainEvent
from schemas.notifications import notification_id
from schemas.routed import EscalationDue
from schemas.rules import EscalationStep, Rule, parse_duration
from streams.inbox.model import Index
from streams.routing.planning import Plan


def at_once(rule: Rule) -> Rule:
    """The rule narrowed to the channels that go now: all but its escalation steps' (the rule itself when it
    has none)."""
    if not rule.escalate:
        return rule
    later = {step.channel for step in rule.escalate}
    return rule.model_copy(update={"channels": {c: r for c, r in rule.channels.items() if c not in later}})


def step_rule(rule: Rule, step: EscalationStep) -> Rule:
    """The rule a step is routed by when it comes due: its one channel, nothing left to hold it back again
    (its wait already counted the rule's delay), its category, criticality and throttle kept."""
    route = rule.channels[step.channel]
    return rule.model_copy(update={"channels": {step.channel: route}, "escalate": None, "delay": None})


def started(plan: Plan, rule: Rule, now: datetime) -> datetime:
    """When the in-app notification goes out, which the steps count from: now, after the rule's delay, or
    when a throttle lets it go."""
    for deferred in plan.deferred:
        if deferred.notification.channel is Channel.INAPP:
            return deferred.until
    return now + timedelta(seconds=parse_duration(rule.delay) if rule.delay else 0)


def steps_due(
    rule: Rule, event: DomainEvent, recipient: str, start: datetime
) -> list[tuple[datetime, EscalationDue]]:
    """Each step of the rule with its due time, as the record the route agent gets back then. The in-app
    notification watched is the one this event makes for the recipient (its id is derived, not stored)."""
    watch = notification_id(event.dedup_key, recipient, Channel.INAPP)
    return [
        (
            start + timedelta(seconds=parse_duration(step.after)),
            EscalationDue(recipient=recipient, event=event, rule=step_rule(rule, step), watch=watch),
        )
        for step in rule.escalate or []
    ]


def was_read(stored_index: Any, watch: str) -> bool:
    """Whether the recipient's inbox (its index as the `inbox` table stores it) has `watch` marked read. One
    the inbox does not hold counts as unread: never kept (in-app disabled, muted, refused) or dropped since
    (past HERALD_INBOX_SIZE or the retention), the recipient cannot be shown to have read it."""
    index = Index.load(stored_index)
    position = index.find(watch)
    return position is not None and index.lines[position].read
