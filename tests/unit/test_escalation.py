"""Escalate if unread, without a broker: the rule's validation, the route step scheduling each step back to
itself, and a step come due meeting the recipient's inbox (read: cancelled; unread or gone: routed)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kernel.errors import InvalidEvent
from kernel.settings import Settings
from kernel.topics import TopicNames
from schemas.channels import Channel
from schemas.events import DomainEvent, RecipientEvent
from schemas.notifications import PushNotification, notification_id
from schemas.preferences import Preferences
from schemas.routed import EscalationDue
from schemas.scheduled import Scheduled
from schemas.status import Outcome
from schemas.users import UserProfile
from streams.effects import Later
from streams.inbox.model import ARCHIVED, READ
from streams.routing import escalation
from streams.routing.planning import Plan
from streams.routing.rendering import TemplateStore
from streams.routing.result import StepResult
from streams.routing.route import RecipientState, parse_routed, route
from streams.routing.rules import RuleBook
from streams.scheduling.tiers import hold, release

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEMPLATES = TemplateStore(EXAMPLES / "templates")
TOPICS = TopicNames.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a Tuesday
TWO = "channels: {inapp: {template: t}, push: {template: t}}\n    "
MESSAGE = """
rules:
  - match: message.received
    category: messages
    channels:
      inapp: {template: direct_message}
      push: {template: direct_message}
      email: {template: direct_message}
    escalate:
      - {after: 10m, channel: push}
      - {after: 1h, channel: email}
  - match: message.late
    category: messages
    delay: 5m
    channels: {inapp: {template: direct_message}, push: {template: direct_message}}
    escalate: [{after: 10m, channel: push}]
  - match: message.busy
    category: messages
    throttle: {limit: 1, per: 1h, excess: defer}
    channels: {inapp: {template: direct_message}, push: {template: direct_message}}
    escalate: [{after: 10m, channel: push}]
"""
BOOK = RuleBook.from_yaml(MESSAGE)
ALICE = UserProfile.model_validate(
    {
        "user_id": "alice",
        "email": "alice@example.com",
        "display_name": "Alice",
        "devices": [{"token": "t1", "platform": "android"}],
    },
    strict=False,
)
DATA = {"sender": "Bob", "preview": "Lunch?", "conversation_id": "c-1"}
WATCH = notification_id("m1", "alice", Channel.INAPP)


def event(type_: str = "message.received") -> DomainEvent:
    return DomainEvent.model_validate(
        {
            "event_id": "m1",
            "type": type_,
            "occurred_at": "2026-11-24T11:59:00Z",
            "recipients": ["alice"],
            "data": DATA,
        },
        strict=False,
    )


def inbox(*lines: tuple[str, int]) -> dict[str, Any]:
    """An inbox index as the inbox table stores it: (notification id, flags) lines."""
    return {"seq": 7, "lines": [[nid, 1_795_000_000_000, flags] for nid, flags in lines]}


def step(
    raw: bytes,
    *,
    stored_inbox: Any = None,
    profile: UserProfile = ALICE,
    preferences: Preferences | None = None,
    throttles: Any = None,
    now: datetime = NOW,
    book: RuleBook = BOOK,
) -> StepResult:
    state = RecipientState("alice", profile, preferences, None, throttles, inbox=lambda: stored_inbox)
    return route(
        raw,
        state,
        rules=book,
        templates=TEMPLATES,
        topics=TOPICS,
        now=now,
        throttle_memory_seconds=86_400.0,
    )


def first(type_: str = "message.received", **kwargs: Any) -> StepResult:
    return step(RecipientEvent(event=event(type_), recipient="alice").to_json(), **kwargs)


def steps_of(result: StepResult) -> list[tuple[Later, EscalationDue]]:
    found = []
    for later in result.effects.later:
        if later.record.topic != TOPICS.routed:
            continue  # a notification held back (the rule's delay, a throttle)
        assert later.record.key == b"alice"
        item = parse_routed(later.record.value)
        assert isinstance(item, EscalationDue)
        found.append((later, item))
    return found


def due(channel: Channel = Channel.PUSH) -> bytes:
    """The record a step of message.received comes back as."""
    for _, item in steps_of(first()):
        if item.channel is channel:
            return item.to_json()
    raise AssertionError(f"no step for {channel}")


# --- the rule ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("channels: {push: {template: t}}\n    escalate: [{after: 1m, channel: push}]", "needs the inapp"),
        (
            "channels: {inapp: {template: t}}\n    escalate: [{after: 1m, channel: push}]",
            "without a template: push",
        ),
        ("channels: {inapp: {template: t}}\n    escalate: [{after: 1m, channel: inapp}]", "other than inapp"),
        (
            "channels: {inapp: {template: t}, push: {template: t}}\n"
            "    escalate: [{after: 1m, channel: push}, {after: 2m, channel: push}]",
            "more than once",
        ),
        (
            "channels: {inapp: {template: t}, push: {template: t}, email: {template: t}}\n"
            "    escalate: [{after: 1h, channel: push}, {after: 10m, channel: email}]",
            "must increase",
        ),
        (
            TWO + "escalate: [{after: 0s, channel: push}]",
            "zero",
        ),
        (
            TWO + "escalate: [{after: soon, channel: push}]",
            "duration",
        ),
        ("channels: {inapp: {template: t}, push: {template: t}}\n    escalate: []", "at least 1"),
        (
            "channels: {inapp: {template: t}, push: {template: t}}\n    digest: {window: 1m}\n"
            "    escalate: [{after: 1m, channel: push}]",
            "digest or fallback",
        ),
        (
            "channels: {inapp: {template: t}, push: {template: t}}\n    fallback: [inapp, push]\n"
            "    escalate: [{after: 1m, channel: push}]",
            "digest or fallback",
        ),
    ],
)
def test_an_escalation_that_cannot_work_is_refused_with_the_line(rule: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as refused:
        RuleBook.from_yaml(f"rules:\n  - match: a\n    {rule}\n")
    assert re.match(r"line [234]: rules\.0", str(refused.value))


def test_the_example_rules_escalate_a_direct_message() -> None:
    rule = RuleBook.from_file(EXAMPLES / "rules.yaml").match("message.received")
    assert [(s.after, s.channel) for s in rule.escalate or []] == [
        ("10m", Channel.PUSH),
        ("1h", Channel.EMAIL),
    ]
    for channel, channel_route in rule.channels.items():
        assert TEMPLATES.missing_parts(channel_route.template, channel) == []


# --- routing the event: in-app now, each step held ---------------------------------------------------------


def test_inapp_goes_now_and_each_step_waits_addressed_back_to_the_route_agent() -> None:
    result = first()
    effects = result.effects
    assert [r.topic for r in effects.records] == [TOPICS.delivery[Channel.INAPP]]
    held = steps_of(result)
    assert [(later.due, later.reason, item.channel) for later, item in held] == [
        (NOW + timedelta(minutes=10), "escalation", Channel.PUSH),
        (NOW + timedelta(hours=1), "escalation", Channel.EMAIL),
    ]
    for _, item in held:
        # The rule it carries routes that one channel, and nothing holds it back or escalates it again.
        assert list(item.rule.channels) == [item.channel]
        assert item.rule.escalate is None and item.rule.delay is None and item.rule.category == "messages"
        assert item.watch == WATCH and item.event == event() and item.recipient == "alice"
    assert {(s.channel, s.outcome, s.reason, s.notification_id) for s in effects.statuses} == {
        (c, Outcome.DEFERRED, "escalation", notification_id("m1", "alice", c))
        for c in (Channel.PUSH, Channel.EMAIL)
    }
    assert result.tally.routed == [Channel.INAPP]
    assert result.tally.deferred == [(Channel.PUSH, "escalation"), (Channel.EMAIL, "escalation")]


def test_the_steps_wait_on_the_scheduler_and_come_back_unchanged() -> None:
    [(later, item), _] = steps_of(first())
    tier_record = hold(later, NOW, TOPICS.scheduled)
    held = Scheduled.model_validate_json(tier_record.value or b"")
    assert held.reason == "escalation" and held.target == TOPICS.routed
    back, is_due = release(held, later.due, TOPICS.scheduled)
    assert is_due and back.topic == TOPICS.routed and parse_routed(back.value) == item


def test_the_steps_count_from_when_the_inapp_notification_goes_out() -> None:
    [(later, _)] = steps_of(first("message.late"))  # the rule's delay holds the in-app one 5 minutes
    assert later.due == NOW + timedelta(minutes=15)
    # A throttle that defers the in-app notification an hour: the push step counts from then.
    sent = [(NOW - timedelta(minutes=1)).timestamp()]
    busy = first("message.busy", throttles={"channel:inapp": sent})
    [(later, _)] = steps_of(busy)
    assert later.due == NOW + timedelta(minutes=59) + timedelta(minutes=10)


def test_without_an_inapp_notification_the_steps_still_run_on_time() -> None:
    # In-app turned off: nothing can be read, so each step goes when due (its inbox holds nothing).
    result = first(profile=ALICE.model_copy(update={"inapp_enabled": False}))
    assert [(s.channel, s.reason) for s in result.effects.statuses if s.outcome == "skipped"] == [
        (Channel.INAPP, "channel_disabled")
    ]
    assert [later.due for later, _ in steps_of(result)] == [
        NOW + timedelta(minutes=10),
        NOW + timedelta(hours=1),
    ]
    assert escalation.started(Plan(), BOOK.match("message.received"), NOW) == NOW


# --- a step come due ---------------------------------------------------------------------------------------


def test_a_step_is_cancelled_when_the_inapp_notification_was_read() -> None:
    for flags in (READ, READ | ARCHIVED):
        result = step(due(), stored_inbox=inbox(("ntf_other", 0), (WATCH, flags)))
        effects = result.effects
        assert not (effects.records or effects.later or effects.writes or effects.rejected)
        [status] = effects.statuses
        assert (status.channel, status.outcome, status.reason) == (
            Channel.PUSH,
            Outcome.SKIPPED,
            "cancelled_read",
        )
        assert status.notification_id == notification_id("m1", "alice", Channel.PUSH)
        assert (status.event_id, status.provider, status.at) == ("m1", "-", NOW)
        assert result.tally.skipped == [(Channel.PUSH, "cancelled_read")] and not result.tally.routed


def test_a_step_goes_when_the_notification_is_unread_archived_or_no_longer_kept() -> None:
    for stored in (inbox((WATCH, 0)), inbox((WATCH, ARCHIVED)), inbox(("ntf_other", READ)), None):
        result = step(due(), stored_inbox=stored, now=NOW + timedelta(minutes=10))
        [record] = result.effects.records
        assert record.topic == TOPICS.delivery[Channel.PUSH] and record.key == b"alice"
        push = PushNotification.model_validate_json(record.value or b"")
        assert push.notification_id == notification_id("m1", "alice", Channel.PUSH)
        assert push.title == "Unread message from Bob" and push.created_at == NOW + timedelta(minutes=10)
        assert not (result.effects.later or result.effects.statuses)
        assert result.tally.routed == [Channel.PUSH]


def test_a_step_is_routed_by_the_rule_it_carries_not_the_rules_in_force_now() -> None:
    result = step(due(Channel.EMAIL), book=RuleBook(()))
    [record] = result.effects.records
    assert record.topic == TOPICS.delivery[Channel.EMAIL]


def test_preferences_still_apply_to_a_step() -> None:
    opted_out = Preferences.model_validate(
        {"user_id": "alice", "categories": {"messages": {"push": False}}}, strict=False
    )
    result = step(due(), preferences=opted_out)
    assert not result.effects.records
    assert [(s.channel, s.outcome, s.reason) for s in result.effects.statuses] == [
        (Channel.PUSH, Outcome.SKIPPED, "opted_out")
    ]
    quiet = Preferences.model_validate(
        {"user_id": "alice", "quiet_hours": {"tue": {"start": "11:00", "end": "13:30"}}}, strict=False
    )
    result = step(due(), preferences=quiet)
    [later] = result.effects.later
    assert later.reason == "quiet_hours" and later.record.topic == TOPICS.delivery[Channel.PUSH]


def test_a_step_whose_rule_names_more_than_its_channel_is_rejected() -> None:
    good = EscalationDue.model_validate_json(due())
    rule = BOOK.match("message.received").model_copy(update={"escalate": None})
    raw = good.model_copy(update={"rule": rule}).to_json()
    result = step(raw)
    assert [type(r.error) for r in result.effects.rejected] == [InvalidEvent]
    assert result.tally.rejected == ["invalid_event"]


def test_was_read() -> None:
    assert escalation.was_read(inbox((WATCH, READ)), WATCH)
    assert not escalation.was_read(inbox((WATCH, 0)), WATCH)
    assert not escalation.was_read(inbox((WATCH, ARCHIVED)), WATCH)
    assert not escalation.was_read(inbox(), WATCH)
    assert not escalation.was_read(None, WATCH)
