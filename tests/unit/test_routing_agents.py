"""The routing agents' batch work without a broker: tables are dicts and the outbox records what it is given
(applying table writes at once, as the real one does)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import CollectorRegistry

from kernel.errors import RecordTooLarge
from kernel.settings import Settings
from kernel.topics import TopicNames
from schemas.channels import Channel
from schemas.events import DomainEvent, RecipientEvent
from schemas.notifications import notification_id
from schemas.users import UserProfile
from streams.effects import Effects
from streams.inbox.model import READ
from streams.ops.metrics import WorkerMetrics
from streams.routing.agents import _intake_batch, _route_batch, count, read_state
from streams.routing.rendering import TemplateStore
from streams.routing.result import Tally
from streams.routing.rules import RuleBook
from streams.runtime.batches import records_of
from streams.runtime.outbox import Outbox
from streams.runtime.tables import StateTable, Tables
from streams.runtime.worker import Worker
from streams.state.directory import home_partition
from streams.state.rules_feed import RuleSource

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
NAMES = TopicNames.from_settings(SETTINGS)
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RULES = """
rules:
  - match: chat.message
    throttle: {limit: 2, per: 1h}
    channels: {inapp: {template: order_update}}
  - match: comment.added
    digest: {window: 10m}
    channels: {inapp: {template: comment_digest}}
  - match: message.received
    channels: {inapp: {template: direct_message}, email: {template: direct_message}}
    escalate: [{after: 10m, channel: email}]
"""


@dataclass
class RecordingOutbox:
    tables: Tables
    applied: list[tuple[Any, Effects]] = field(default_factory=list)

    def apply(self, event: Any, effects: Effects, stage: str, message: Any = None) -> None:
        for write in effects.writes:
            data = self.tables.by_name(write.table).faust
            if write.value is None:
                data.pop(write.key, None)
            else:
                data[write.key] = write.value
        self.applied.append((event, effects))


def make_worker(users: dict[str, Any]) -> Worker:
    tables = Tables(
        users=StateTable(users, lambda v: UserProfile.model_validate(v, strict=False)),
        preferences=StateTable({}),
        delivered=StateTable({}),
        digests=StateTable({}),
        throttles=StateTable({}),
        inbox=StateTable({}),
    )
    topics = SimpleNamespace(names=NAMES)
    return Worker(
        settings=SETTINGS,
        app=cast(Any, None),
        topics=cast(Any, topics),
        tables=tables,
        metrics=WorkerMetrics(CollectorRegistry(), "test"),
        rules=RuleSource(RuleBook.from_yaml(RULES), validate=lambda book: None),
        templates=TemplateStore(EXAMPLES / "templates"),
        settler=cast(Any, None),
        clock=lambda: NOW,
    )


class FaustEvent(SimpleNamespace):
    """A stand-in for a Faust event: the agents make it the current one, which takes a weak reference."""


def message(key: bytes | None, value: bytes | None) -> Any:
    """A Faust event as the batch-fed agents get it: here one fetched record."""
    record = SimpleNamespace(topic=NAMES.routed, partition=0, offset=0, key=key, value=value)
    return FaustEvent(message=SimpleNamespace(records=[record]))


def routed(type_: str, n: int) -> Any:
    event = DomainEvent.model_validate(
        {
            "event_id": f"e{n}",
            "type": type_,
            "occurred_at": "2026-11-24T11:00:00Z",
            "recipients": ["alice"],
            "data": {"order_id": "o", "text": f"t{n}"},
        },
        strict=False,
    )
    return message(b"alice", RecipientEvent(event=event, recipient="alice").to_json())


def run_route(worker: Worker, events: list[Any]) -> RecordingOutbox:
    outbox = RecordingOutbox(worker.tables)
    asyncio.run(_route_batch(worker, records_of(events), cast(Outbox, outbox)))
    return outbox


def sample(worker: Worker, name: str, **labels: str) -> float:
    return worker.metrics.registry.get_sample_value(name, labels) or 0.0


def test_events_of_one_recipient_in_a_batch_see_each_others_throttle_writes() -> None:
    worker = make_worker({"alice": {"user_id": "alice"}})
    outbox = run_route(worker, [routed("chat.message", n) for n in range(3)])
    assert [len(effects.records) for _, effects in outbox.applied] == [1, 1, 0]
    assert [s.reason for s in outbox.applied[2][1].statuses] == ["throttled"]
    assert len(worker.tables.throttles.faust["alice"]["channel:inapp"]) == 2
    assert sample(worker, "herald_notifications_routed_total", channel="inapp") == 2
    assert sample(worker, "herald_notifications_skipped_total", channel="inapp", reason="throttled") == 1


def test_a_digests_release_is_scheduled_once_per_batch() -> None:
    worker = make_worker({"alice": {"user_id": "alice"}})
    outbox = run_route(worker, [routed("comment.added", n) for n in range(3)])
    assert [len(effects.later) for _, effects in outbox.applied] == [1, 0, 0]
    [bucket] = worker.tables.digests.faust["alice"].values()
    assert bucket["count"] == 3
    assert sample(worker, "herald_notifications_deferred_total", channel="inapp", reason="digest") == 3


def test_each_effect_is_applied_to_the_event_that_caused_it() -> None:
    worker = make_worker({})
    events = [routed("chat.message", 1), message(None, b"{}")]
    outbox = run_route(worker, events)
    assert [event for event, _ in outbox.applied] == events
    assert [r.error.reason for _, effects in outbox.applied for r in effects.rejected] == [  # type: ignore[attr-defined]
        "unknown_user",
        "invalid_event",
    ]
    assert sample(worker, "herald_events_rejected_total", reason="unknown_user") == 1
    assert sample(worker, "herald_events_rejected_total", reason="invalid_event") == 1


def test_a_stored_profile_this_version_cannot_read_is_parked_not_retried() -> None:
    worker = make_worker({"alice": {"user_id": "alice", "email": "not an address"}})
    outbox = run_route(worker, [routed("chat.message", 1)])
    [(_, effects)] = outbox.applied
    assert [r.stage for r in effects.rejected] == ["route"] and not effects.records


def test_intake_counts_every_event_and_each_rejection() -> None:
    worker = make_worker({})
    outbox = RecordingOutbox(worker.tables)
    events = [routed("chat.message", 1), message(b"k", b"nope"), message(b"k", None)]
    # Intake reads domain events: the routed envelope is not one, so all three are rejected.
    asyncio.run(_intake_batch(worker, records_of(events), frozenset(), cast(Outbox, outbox)))
    assert sample(worker, "herald_events_consumed_total") == 3
    assert sample(worker, "herald_events_rejected_total", reason="invalid_event") == 3
    assert all(r.stage == "intake" for _, effects in outbox.applied for r in effects.rejected)


def event_on(partition: int, *recipients: str, padding: int = 0) -> Any:
    """A domain event as intake reads it, fetched from `partition` of the events topic."""
    value = DomainEvent.model_validate(
        {
            "event_id": "m1",
            "type": "message.received",
            "occurred_at": "2026-11-24T11:00:00Z",
            "recipients": list(recipients),
            "data": {"sender": "Bob", "preview": "Hi", "conversation_id": "c", "note": "x" * padding},
        },
        strict=False,
    ).to_json()
    record = SimpleNamespace(topic=NAMES.events, partition=partition, offset=7, key=None, value=value)
    return FaustEvent(message=SimpleNamespace(records=[record]))


def run_intake(worker: Worker, events: list[Any], held: frozenset[int]) -> RecordingOutbox:
    outbox = RecordingOutbox(worker.tables)
    asyncio.run(_intake_batch(worker, records_of(events), held, cast(Outbox, outbox)))
    return outbox


ALICE_HOME = home_partition("alice", SETTINGS.partitions)


def test_an_event_for_one_recipient_on_their_partition_held_here_is_routed_at_once() -> None:
    worker = make_worker({"alice": {"user_id": "alice", "email": "alice@example.com"}})
    outbox = run_intake(worker, [event_on(ALICE_HOME, "alice")], frozenset({ALICE_HOME}))
    # Its notification and its escalation step, no routed record: the route step ran here.
    assert [r.topic for _, effects in outbox.applied for r in effects.records] == [
        NAMES.delivery[Channel.INAPP]
    ]
    assert [held.record.topic for _, effects in outbox.applied for held in effects.later] == [NAMES.routed]
    assert sample(worker, "herald_events_consumed_total") == 1
    assert sample(worker, "herald_notifications_routed_total", channel="inapp") == 1
    assert sample(worker, "herald_notifications_deferred_total", channel="email", reason="escalation") == 1


def test_an_event_goes_through_the_routed_topic_unless_its_one_recipients_state_is_here() -> None:
    worker = make_worker({"alice": {"user_id": "alice"}, "bob": {"user_id": "bob"}})
    elsewhere = (ALICE_HOME + 1) % SETTINGS.partitions
    cases = [
        (event_on(ALICE_HOME, "alice"), frozenset({elsewhere}), [b"alice"]),  # the partition is not held now
        (
            event_on(elsewhere, "alice"),
            frozenset({ALICE_HOME, elsewhere}),
            [b"alice"],
        ),  # not alice's partition
        (event_on(ALICE_HOME, "alice", "bob"), frozenset(range(SETTINGS.partitions)), [b"alice", b"bob"]),
        # Large enough that its routed record might be over the budget: the hop, where the outbox measures it
        # (the outcome of an event must not depend on the partition it came in on).
        (
            event_on(ALICE_HOME, "alice", padding=SETTINGS.max_record_bytes // 8),
            frozenset({ALICE_HOME}),
            [b"alice"],
        ),
    ]
    for event, held, keys in cases:
        outbox = run_intake(worker, [event], held)
        records = [r for _, effects in outbox.applied for r in effects.records]
        assert [(r.topic, r.key) for r in records] == [(NAMES.routed, key) for key in keys]
    assert sample(worker, "herald_notifications_routed_total", channel="inapp") == 0


def test_a_recipient_without_a_profile_yet_takes_the_hop() -> None:
    # Their profile may be on its way (published just before the event): the route agent meets the record a
    # fetch later, and dead-letters it there if the profile is still missing.
    worker = make_worker({})
    outbox = run_intake(worker, [event_on(ALICE_HOME, "alice")], frozenset({ALICE_HOME}))
    records = [r for _, effects in outbox.applied for r in effects.records]
    assert [(r.topic, r.key) for r in records] == [(NAMES.routed, b"alice")]
    assert not [r for _, effects in outbox.applied for r in effects.rejected]
    [routed_record] = records
    dead = run_route(worker, [message(routed_record.key, routed_record.value)])
    assert [r.stage for _, effects in dead.applied for r in effects.rejected] == ["route"]
    assert sample(worker, "herald_events_rejected_total", reason="unknown_user") == 1


def test_read_state_reads_every_table_for_the_user() -> None:
    worker = make_worker({"alice": {"user_id": "alice"}})
    worker.tables.throttles.faust["alice"] = {"channel:inapp": [1.0]}
    state = read_state(worker.tables, "alice")
    assert state.user_id == "alice" and state.profile is not None and state.profile.user_id == "alice"
    assert state.throttles == {"channel:inapp": [1.0]} and state.digests is None and state.preferences is None
    assert read_state(worker.tables, "nobody").profile is None


def test_an_escalation_step_meets_the_recipients_inbox() -> None:
    worker = make_worker({"alice": {"user_id": "alice", "email": "alice@example.com"}})
    event = DomainEvent.model_validate(
        {
            "event_id": "m1",
            "type": "message.received",
            "occurred_at": "2026-11-24T11:00:00Z",
            "recipients": ["alice"],
            "data": {"sender": "Bob", "preview": "Hi", "conversation_id": "c"},
        },
        strict=False,
    )
    first = run_route(worker, [message(b"alice", RecipientEvent(event=event, recipient="alice").to_json())])
    [(_, effects)] = first.applied
    [held] = effects.later
    assert held.record.topic == NAMES.routed
    come_due = message(b"alice", held.record.value)

    unread = run_route(worker, [come_due])
    assert [r.topic for _, effects in unread.applied for r in effects.records] == [
        NAMES.delivery[Channel.EMAIL]
    ]
    watched = notification_id("m1", "alice", Channel.INAPP)
    worker.tables.inbox.faust["alice"] = {"seq": 1, "lines": [[watched, 0, READ]]}
    read = run_route(worker, [come_due])
    [(_, effects)] = read.applied
    assert not effects.records and [s.reason for s in effects.statuses] == ["cancelled_read"]
    assert sample(worker, "herald_notifications_skipped_total", channel="email", reason="cancelled_read") == 1
    assert sample(worker, "herald_notifications_deferred_total", channel="email", reason="escalation") == 1


def test_count_increments_each_label() -> None:
    worker = make_worker({})
    count(
        worker.metrics,
        [
            Tally(
                rejected=["no_rule"],
                routed=[Channel.EMAIL, Channel.EMAIL],
                deferred=[(Channel.SMS, "quiet_hours")],
                skipped=[(Channel.PUSH, "opted_out")],
            ),
            Tally(routed=[Channel.EMAIL]),
        ],
    )
    assert sample(worker, "herald_events_rejected_total", reason="no_rule") == 1
    assert sample(worker, "herald_notifications_routed_total", channel="email") == 3
    assert sample(worker, "herald_notifications_deferred_total", channel="sms", reason="quiet_hours") == 1
    assert sample(worker, "herald_notifications_skipped_total", channel="push", reason="opted_out") == 1


def test_an_input_dead_lettered_as_too_large_is_counted_as_rejected_not_routed() -> None:
    class TooSmall(RecordingOutbox):
        def apply(
            self, event: Any, effects: Effects, stage: str, message: Any = None
        ) -> RecordTooLarge | None:
            self.applied.append((event, effects))
            return RecordTooLarge("a record for herald.deliver.inapp would be too large")

    worker = make_worker({"alice": {"user_id": "alice"}})
    asyncio.run(
        _route_batch(worker, records_of([routed("chat.message", 1)]), cast(Outbox, TooSmall(worker.tables)))
    )
    assert sample(worker, "herald_events_rejected_total", reason="too_large") == 1
    assert sample(worker, "herald_notifications_routed_total", channel="inapp") == 0
