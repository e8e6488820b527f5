from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kernel.errors import InvalidEvent, TemplateFailure, UnknownUser
from kernel.privacy import pseudonym
from kernel.settings import Settings
from kernel.topics import TopicNames
from schemas.channels import Channel
from schemas.events import DigestRelease, DomainEvent, RecipientEvent
from schemas.notifications import EmailNotification, InAppNotification, notification_id
from schemas.preferences import Preferences
from schemas.status import Outcome
from schemas.users import UserProfile
from streams.effects import TableWrite
from streams.routing.digests import bucket_of
from streams.routing.rendering import TemplateStore
from streams.routing.result import StepResult
from streams.routing.route import RecipientState, route
from streams.routing.rules import RuleBook

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEMPLATES = TemplateStore(EXAMPLES / "templates")
TOPICS = TopicNames.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a Tuesday
MEMORY = 24 * 3600.0

BOOK = RuleBook.from_yaml(
    """
rules:
  - match: order.shipped
    category: orders
    channels: {inapp: {template: order_shipped}, email: {template: order_shipped}}
  - match: order.late
    category: orders
    delay: 5m
    channels: {inapp: {template: order_shipped}, email: {template: order_shipped}}
  - match: order.odd
    category: orders
    channels: {inapp: {template: order_update}, email: {template: order_shipped}}
  - match: security.login
    category: account
    channels:
      push: {template: security_login}
      sms: {template: security_login}
      email: {template: security_login}
  - match: chat.message
    throttle: {limit: 2, per: 1h}
    channels: {inapp: {template: order_update}}
  - match: chat.nudge
    throttle: {limit: 1, per: 1h, excess: defer}
    channels: {inapp: {template: order_update}}
  - match: comment.added
    digest: {window: 10m}
    channels: {inapp: {template: comment_digest}}
"""
)

ALICE = UserProfile.model_validate(
    {
        "user_id": "alice",
        "email": "alice@example.com",
        "phone": "+33612345678",
        "display_name": "Alice",
        "devices": [{"token": "t1", "platform": "android"}],
    },
    strict=False,
)
SHIPPED = {"order_id": "A-1", "carrier": "DHL", "items": ["Kettle"]}


def event(type_: str = "order.shipped", event_id: str = "e1", **data: Any) -> DomainEvent:
    return DomainEvent.model_validate(
        {
            "event_id": event_id,
            "type": type_,
            "occurred_at": "2026-11-24T11:00:00Z",
            "recipients": ["alice"],
            "data": data or SHIPPED,
        },
        strict=False,
    )


def routed(ev: DomainEvent, recipient: str = "alice") -> bytes:
    return RecipientEvent(event=ev, recipient=recipient).to_json()


def state(
    profile: UserProfile | None = ALICE,
    preferences: Preferences | None = None,
    digests: Mapping[str, Any] | None = None,
    throttles: Mapping[str, Sequence[float]] | None = None,
    user_id: str = "alice",
) -> RecipientState:
    return RecipientState(user_id, profile, preferences, digests, throttles)


def step(raw: bytes | None, recipient: RecipientState | None = None, now: datetime = NOW) -> StepResult:
    return route(
        raw,
        recipient or state(),
        rules=BOOK,
        templates=TEMPLATES,
        topics=TOPICS,
        now=now,
        throttle_memory_seconds=MEMORY,
    )


def statuses(result: StepResult) -> set[tuple[Channel, Outcome, str | None]]:
    return {(s.channel, s.outcome, s.reason) for s in result.effects.statuses}


def written(result: StepResult, table: str) -> Any:
    [write] = [w for w in result.effects.writes if w.table == table]
    assert write.key == "alice"
    return write.value


# --- rejections --------------------------------------------------------------------------------------------


def test_unknown_user_is_rejected_whole() -> None:
    result = step(routed(event()), state(profile=None))
    [rejected] = result.effects.rejected
    assert isinstance(rejected.error, UnknownUser) and rejected.stage == "route"
    # Named by its pseudonym: the dead letter's detail carries no user id (the record itself still does).
    assert "alice" not in str(rejected.error) and pseudonym("alice") in str(rejected.error)
    assert not (result.effects.records or result.effects.later or result.effects.statuses)
    assert result.tally.rejected == ["unknown_user"] and not result.tally.routed


def test_invalid_input_is_rejected_at_route() -> None:
    for raw in (b"[]", b'{"kind": "event"}', b"\xff", None):
        result = step(raw)
        assert [(type(r.error), r.stage) for r in result.effects.rejected] == [(InvalidEvent, "route")]
        assert result.tally.rejected == ["invalid_event"] and not result.effects.records


def test_a_record_keyed_by_another_user_is_rejected() -> None:
    # Keyed by bob, it sits on bob's partition: alice's state is not there to meet it.
    result = step(routed(event()), state(user_id="bob", profile=None))
    [rejected] = result.effects.rejected
    assert isinstance(rejected.error, InvalidEvent) and "keyed" in str(rejected.error)
    assert result.tally.rejected == ["invalid_event"]


def test_an_unknown_event_type_is_rejected() -> None:
    result = step(routed(event("nobody.cares")))
    assert result.tally.rejected == ["no_rule"]
    assert [r.stage for r in result.effects.rejected] == ["route"]


# --- sending -----------------------------------------------------------------------------------------------


def test_one_notification_per_channel_to_its_delivery_topic_keyed_by_recipient() -> None:
    result = step(routed(event()))
    effects = result.effects
    by_topic = {r.topic: r for r in effects.records}
    assert set(by_topic) == {TOPICS.delivery[Channel.INAPP], TOPICS.delivery[Channel.EMAIL]}
    assert {r.key for r in effects.records} == {b"alice"}
    inapp_value = by_topic[TOPICS.delivery[Channel.INAPP]].value
    email_value = by_topic[TOPICS.delivery[Channel.EMAIL]].value
    assert inapp_value is not None and email_value is not None
    inapp = InAppNotification.model_validate_json(inapp_value)
    email = EmailNotification.model_validate_json(email_value)
    assert inapp.title == "Your order A-1 has shipped" and email.to == "alice@example.com"
    assert email.notification_id == notification_id("e1", "alice", Channel.EMAIL)
    assert email.created_at == NOW
    assert not (effects.later or effects.statuses or effects.rejected or effects.writes)
    assert sorted(result.tally.routed) == sorted([Channel.INAPP, Channel.EMAIL])
    assert not (result.tally.deferred or result.tally.skipped or result.tally.rejected)


def test_an_opt_out_skips_that_channel_with_a_status() -> None:
    preferences = Preferences.model_validate(
        {"user_id": "alice", "categories": {"orders": {"email": False}}}, strict=False
    )
    result = step(routed(event()), state(preferences=preferences))
    assert [r.topic for r in result.effects.records] == [TOPICS.delivery[Channel.INAPP]]
    [status] = result.effects.statuses
    assert (status.channel, status.outcome, status.reason) == (Channel.EMAIL, Outcome.SKIPPED, "opted_out")
    assert status.notification_id == notification_id("e1", "alice", Channel.EMAIL)
    assert (status.event_id, status.recipient, status.provider, status.attempt) == ("e1", "alice", "-", 1)
    assert status.at == NOW
    assert result.tally.skipped == [(Channel.EMAIL, "opted_out")]
    assert result.tally.routed == [Channel.INAPP]


def test_quiet_hours_hold_interruptive_channels_until_the_window_ends() -> None:
    preferences = Preferences.model_validate(
        {"user_id": "alice", "quiet_hours": {"tue": {"start": "11:00", "end": "13:30"}}}, strict=False
    )
    result = step(
        routed(event("security.login", device="Firefox", city="Lyon")), state(preferences=preferences)
    )
    effects = result.effects
    # Email waits in an inbox anyway: it goes now. Push and SMS buzz a phone: they wait, durably.
    assert [r.topic for r in effects.records] == [TOPICS.delivery[Channel.EMAIL]]
    end = datetime(2026, 11, 24, 13, 30, tzinfo=UTC)
    assert {(later.record.topic, later.due, later.reason) for later in effects.later} == {
        (TOPICS.delivery[Channel.PUSH], end, "quiet_hours"),
        (TOPICS.delivery[Channel.SMS], end, "quiet_hours"),
    }
    assert all(later.record.key == b"alice" for later in effects.later)
    assert statuses(result) == {
        (Channel.PUSH, Outcome.DEFERRED, "quiet_hours"),
        (Channel.SMS, Outcome.DEFERRED, "quiet_hours"),
    }
    assert sorted(result.tally.deferred) == [(Channel.PUSH, "quiet_hours"), (Channel.SMS, "quiet_hours")]
    assert result.tally.routed == [Channel.EMAIL]


def test_a_rule_delay_holds_every_notification() -> None:
    result = step(routed(event("order.late")))
    effects = result.effects
    assert not effects.records and not effects.statuses
    due = NOW + timedelta(minutes=5)
    assert sorted((later.record.topic, later.due, later.reason) for later in effects.later) == sorted(
        [
            (TOPICS.delivery[Channel.INAPP], due, "delay"),
            (TOPICS.delivery[Channel.EMAIL], due, "delay"),
        ]
    )
    held = [later.record.value for later in effects.later]
    assert all(value is not None and b'"recipient":"alice"' in value for value in held)
    # Counted as routed (it will go) and as deferred for its delay, as before.
    assert sorted(result.tally.routed) == sorted([Channel.INAPP, Channel.EMAIL])
    assert sorted(result.tally.deferred) == sorted([(Channel.INAPP, "delay"), (Channel.EMAIL, "delay")])


def test_a_template_failure_parks_its_channel_while_the_others_go() -> None:
    result = step(routed(event("order.odd", order_id="A-1")))  # order_shipped's email needs a carrier
    assert [r.topic for r in result.effects.records] == [TOPICS.delivery[Channel.INAPP]]
    [rejected] = result.effects.rejected
    assert isinstance(rejected.error, TemplateFailure) and rejected.stage == "route.email"
    assert result.tally.skipped == [(Channel.EMAIL, "template_error")]
    assert result.tally.routed == [Channel.INAPP]
    assert result.tally.rejected == []  # the event itself was routed


# --- throttling --------------------------------------------------------------------------------------------


def test_throttle_records_each_send() -> None:
    earlier = NOW.timestamp() - 100
    result = step(routed(event("chat.message", order_id="c")), state(throttles={"channel:inapp": [earlier]}))
    assert [r.topic for r in result.effects.records] == [TOPICS.delivery[Channel.INAPP]]
    assert written(result, "throttles") == {"channel:inapp": [earlier, NOW.timestamp()]}


def test_throttle_drops_the_excess_with_a_status() -> None:
    sent = {"channel:inapp": [NOW.timestamp() - 100, NOW.timestamp() - 50]}
    result = step(routed(event("chat.message", order_id="c")), state(throttles=sent))
    assert not result.effects.records and not result.effects.later
    assert statuses(result) == {(Channel.INAPP, Outcome.SKIPPED, "throttled")}
    assert result.effects.writes == []  # nothing sent, nothing to remember
    assert result.tally.skipped == [(Channel.INAPP, "throttled")] and not result.tally.routed


def test_throttle_defers_the_excess_until_a_slot_frees() -> None:
    # The same reason as a dropped excess: `throttled` says why, the outcome says what became of it.
    first = NOW.timestamp() - 600
    result = step(routed(event("chat.nudge", order_id="c")), state(throttles={"channel:inapp": [first]}))
    assert not result.effects.records
    [later] = result.effects.later
    assert later.due == datetime.fromtimestamp(first + 3600, UTC) and later.reason == "throttled"
    assert later.record.topic == TOPICS.delivery[Channel.INAPP] and later.record.key == b"alice"
    assert statuses(result) == {(Channel.INAPP, Outcome.DEFERRED, "throttled")}
    assert result.tally.deferred == [(Channel.INAPP, "throttled")]


def test_the_next_event_sees_the_previous_events_send_record() -> None:
    # What the agent does within a batch: apply one event's writes before reading state for the next.
    throttles: Mapping[str, Sequence[float]] | None = None
    outcomes = []
    for n in range(3):
        result = step(routed(event("chat.message", f"m{n}", order_id="c")), state(throttles=throttles))
        throttles = next((w.value for w in result.effects.writes if w.table == "throttles"), throttles)
        outcomes.append((len(result.effects.records), statuses(result)))
    assert outcomes == [(1, set()), (1, set()), (0, {(Channel.INAPP, Outcome.SKIPPED, "throttled")})]


# --- digests -----------------------------------------------------------------------------------------------


def collect(n: int, digests: Mapping[str, Any] | None) -> StepResult:
    return step(routed(event("comment.added", f"c{n}", text=f"comment {n}")), state(digests=digests))


def test_digest_collects_and_schedules_its_release_once() -> None:
    first = collect(1, None)
    assert not first.effects.records
    bucket = bucket_of(BOOK.match("comment.added"), event("comment.added", text="x"))
    buckets = written(first, "digests")
    assert buckets[bucket]["count"] == 1
    assert statuses(first) == {(Channel.INAPP, Outcome.DEFERRED, "digest")}
    [status] = first.effects.statuses
    assert status.notification_id == notification_id("c1", "alice", Channel.INAPP)
    [release] = first.effects.later
    assert release.due == NOW + timedelta(minutes=10) and release.reason == "digest"
    assert release.record.topic == TOPICS.routed and release.record.key == b"alice"
    assert release.record.value == DigestRelease(recipient="alice", bucket=bucket).to_json()
    assert first.tally.deferred == [(Channel.INAPP, "digest")] and not first.tally.routed

    second = collect(2, buckets)
    assert written(second, "digests")[bucket]["count"] == 2
    assert second.effects.later == []  # the bucket is open: its release is already scheduled
    assert statuses(second) == {(Channel.INAPP, Outcome.DEFERRED, "digest")}


def test_digest_release_sends_one_summary_and_forgets_the_bucket() -> None:
    buckets = written(collect(1, None), "digests")
    buckets = written(collect(2, buckets), "digests")
    [bucket] = buckets
    release = DigestRelease(recipient="alice", bucket=bucket).to_json()
    result = step(release, state(digests=buckets), now=NOW + timedelta(minutes=10))
    [record] = result.effects.records
    assert record.topic == TOPICS.delivery[Channel.INAPP] and record.key == b"alice" and record.value
    summary = InAppNotification.model_validate_json(record.value)
    assert summary.title == "2 new comments" and summary.body == "comment 1 | comment 2"
    assert result.effects.writes == [TableWrite("digests", "alice", None)]
    assert result.tally.routed == [Channel.INAPP]

    replayed = step(release, state(digests=None), now=NOW + timedelta(minutes=11))
    assert not replayed.effects and replayed.tally.routed == [] and replayed.tally.rejected == []


def test_digest_release_keeps_the_recipients_other_buckets() -> None:
    buckets = dict(written(collect(1, None), "digests"))
    [bucket] = buckets
    buckets["other|bucket"] = buckets[bucket]
    result = step(DigestRelease(recipient="alice", bucket=bucket).to_json(), state(digests=buckets))
    assert written(result, "digests") == {"other|bucket": buckets[bucket]}
    assert len(result.effects.records) == 1
