from __future__ import annotations

import json
from typing import Any

from kernel.errors import InvalidEvent, NoRule, TooManyRecipients
from schemas.events import DomainEvent, RecipientEvent
from streams.effects import Effects
from streams.routing.intake import intake, take
from streams.routing.rules import RuleBook

ROUTED = "test.routed"
BOOK = RuleBook.from_yaml("rules:\n  - match: 'order.*'\n    channels: {inapp: {template: order_update}}\n")


def raw(**overrides: Any) -> bytes:
    document = {
        "event_id": "e1",
        "type": "order.shipped",
        "occurred_at": "2026-11-24T11:00:00Z",
        "recipients": ["alice"],
        "data": {"order_id": "A-1"},
        **overrides,
    }
    return json.dumps(document).encode()


def test_fans_out_one_record_per_distinct_recipient_keyed_by_user() -> None:
    result = intake(raw(recipients=["bob", "alice", "bob", "carol", "alice"]), BOOK, ROUTED, 1000)
    effects = result.effects
    assert [r.key for r in effects.records] == [b"bob", b"alice", b"carol"]  # first-seen order, no repeats
    assert {r.topic for r in effects.records} == {ROUTED}
    assert all(r.partition is None for r in effects.records)  # the key chooses: it meets the user's state
    for record in effects.records:
        assert record.value is not None
        routed = RecipientEvent.model_validate_json(record.value)
        assert routed.recipient.encode() == record.key
        assert routed.event.event_id == "e1" and routed.event.type == "order.shipped"
        assert routed.event.data == {"order_id": "A-1"}
        assert routed.event.recipients == [routed.recipient]  # its own recipient, not the whole list
    assert not (effects.later or effects.statuses or effects.rejected or effects.writes)
    assert result.tally.rejected == []


def test_invalid_json_is_one_rejection_at_intake() -> None:
    result = intake(b"{not json", BOOK, ROUTED, 1000)
    assert result.effects.records == []
    [rejected] = result.effects.rejected
    assert isinstance(rejected.error, InvalidEvent) and rejected.stage == "intake"
    assert result.tally.rejected == ["invalid_event"]


def test_an_invalid_envelope_and_an_empty_message_are_rejected() -> None:
    for value in (raw(recipients=[]), raw(occurred_at="yesterday"), None):
        result = intake(value, BOOK, ROUTED, 1000)
        assert not result.effects.records
        assert [type(r.error) for r in result.effects.rejected] == [InvalidEvent]
        assert result.tally.rejected == ["invalid_event"]


def test_an_event_without_a_rule_is_one_dead_letter_not_one_per_recipient() -> None:
    result = intake(raw(type="user.created", recipients=["a", "b", "c"]), BOOK, ROUTED, 1000)
    assert result.effects.records == []
    [rejected] = result.effects.rejected
    assert isinstance(rejected.error, NoRule) and rejected.stage == "intake"
    assert result.tally.rejected == ["no_rule"]
    assert result.effects == Effects(rejected=result.effects.rejected)  # nothing else happens


def test_rule_conditions_decide_whether_it_routes() -> None:
    book = RuleBook.from_yaml(
        "rules:\n  - match: order.paid\n    when: [{path: data.total, op: gt, value: 100}]\n"
        "    channels: {inapp: {template: order_update}}\n"
    )
    assert intake(raw(type="order.paid", data={"total": 150}), book, ROUTED, 1000).effects.records
    refused = intake(raw(type="order.paid", data={"total": 50}), book, ROUTED, 1000)
    assert not refused.effects.records and refused.tally.rejected == ["no_rule"]


def test_a_routed_record_does_not_grow_with_the_events_other_recipients() -> None:
    # Each record carrying the whole list made fan-out grow with the square of the recipients: 100 recipients
    # with long ids wrote 1.5 MB to the routed topic, 200 wrote 6 MB.
    def routed_bytes(count: int) -> list[int]:
        recipients = [f"{'u' * 140}{n:03d}" for n in range(count)]
        records = intake(raw(recipients=recipients), BOOK, ROUTED, 1000).effects.records
        assert len(records) == count
        return [len(r.value or b"") for r in records]

    assert max(routed_bytes(200)) == max(routed_bytes(2)) < 1000
    assert sum(routed_bytes(200)) < 200 * 1000


def test_a_routed_record_is_read_by_this_version_and_the_previous_one() -> None:
    # A worker of the previous version may read the new records during a rolling upgrade (they keep the
    # `recipients` field, reduced), and this one reads the records it wrote (the whole list).
    [record] = intake(raw(recipients=["bob"]), BOOK, ROUTED, 1000).effects.records
    document = json.loads(record.value or b"")
    assert document["event"]["recipients"] == ["bob"]
    previous = RecipientEvent(
        event=DomainEvent.model_validate_json(raw(recipients=["bob", "alice"])), recipient="bob"
    )
    assert RecipientEvent.model_validate_json(previous.to_json()).event.recipients == ["bob", "alice"]


def test_more_recipients_than_allowed_is_one_dead_letter_at_intake() -> None:
    many = [f"u{n}" for n in range(11)]
    assert len(intake(raw(recipients=many[:10]), BOOK, ROUTED, 10).effects.records) == 10
    result = intake(raw(recipients=many), BOOK, ROUTED, 10)
    assert result.effects.records == []
    [rejected] = result.effects.rejected
    assert isinstance(rejected.error, TooManyRecipients) and rejected.stage == "intake"
    assert "11 listed, at most 10" in rejected.error.detail
    assert result.tally.rejected == ["too_many_recipients"]
    # Over the default too, which the envelope no longer limits by itself.
    assert intake(raw(recipients=[f"u{n}" for n in range(1001)]), BOOK, ROUTED, 1000).tally.rejected == [
        "too_many_recipients"
    ]


def test_take_keeps_an_event_for_one_recipient_whose_state_is_here() -> None:
    asked: list[str] = []

    def here(recipient: str) -> bool:
        asked.append(recipient)
        return recipient == "alice"

    kept = take(raw(recipients=["alice", "alice"]), BOOK, ROUTED, 1000, here=here)
    assert (
        kept.here is not None and kept.here.recipient == "alice" and kept.here.event.recipients == ["alice"]
    )
    assert kept.result.effects == Effects()
    # Elsewhere, or more than one recipient (never asked): routed records, as `intake` makes them.
    for recipients in (["bob"], ["alice", "bob"]):
        fanned = take(raw(recipients=recipients), BOOK, ROUTED, 1000, here=here)
        assert fanned.here is None and [r.key for r in fanned.result.effects.records] == [
            r.encode() for r in recipients
        ]
    assert asked == ["alice", "bob"]
    # A rejected event is rejected, whatever `here` says.
    assert take(b"nope", BOOK, ROUTED, 1000, here=here).result.effects.rejected
