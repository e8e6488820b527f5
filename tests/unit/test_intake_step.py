from __future__ import annotations

import json
from typing import Any

from kernel.errors import InvalidEvent, NoRule
from schemas.events import RecipientEvent
from streams.effects import Effects
from streams.routing.intake import intake
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
    result = intake(raw(recipients=["bob", "alice", "bob", "carol", "alice"]), BOOK, ROUTED)
    effects = result.effects
    assert [r.key for r in effects.records] == [b"bob", b"alice", b"carol"]  # first-seen order, no repeats
    assert {r.topic for r in effects.records} == {ROUTED}
    assert all(r.partition is None for r in effects.records)  # the key chooses: it meets the user's state
    for record in effects.records:
        assert record.value is not None
        routed = RecipientEvent.model_validate_json(record.value)
        assert routed.recipient.encode() == record.key
        assert routed.event.event_id == "e1" and routed.event.type == "order.shipped"
        assert routed.event.recipients == ["bob", "alice", "bob", "carol", "alice"]  # the event untouched
    assert not (effects.later or effects.statuses or effects.rejected or effects.writes)
    assert result.tally.rejected == []


def test_invalid_json_is_one_rejection_at_intake() -> None:
    result = intake(b"{not json", BOOK, ROUTED)
    assert result.effects.records == []
    [rejected] = result.effects.rejected
    assert isinstance(rejected.error, InvalidEvent) and rejected.stage == "intake"
    assert result.tally.rejected == ["invalid_event"]


def test_an_invalid_envelope_and_an_empty_message_are_rejected() -> None:
    for value in (raw(recipients=[]), raw(occurred_at="yesterday"), None):
        result = intake(value, BOOK, ROUTED)
        assert not result.effects.records
        assert [type(r.error) for r in result.effects.rejected] == [InvalidEvent]
        assert result.tally.rejected == ["invalid_event"]


def test_an_event_without_a_rule_is_one_dead_letter_not_one_per_recipient() -> None:
    result = intake(raw(type="user.created", recipients=["a", "b", "c"]), BOOK, ROUTED)
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
    assert intake(raw(type="order.paid", data={"total": 150}), book, ROUTED).effects.records
    refused = intake(raw(type="order.paid", data={"total": 50}), book, ROUTED)
    assert not refused.effects.records and refused.tally.rejected == ["no_rule"]
