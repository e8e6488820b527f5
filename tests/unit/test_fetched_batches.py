"""The offset bookkeeping of batch-fed agents: a whole fetched batch is one Faust message, and its ack must
let Faust commit exactly past what was processed, never past a batch still in flight."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from faust.types import TP

from adapters.broker.fetched_batches import (
    BatchMessage,
    FetchedBatch,
    answered_offsets,
    first_answered,
    to_batch_message,
    unread,
)
from kernel.settings import Settings
from streams.app import create_app

TOPIC = TP("herald.routed", 3)


class Rec(NamedTuple):
    offset: int
    key: bytes | None = b"k"
    value: bytes | None = b"v"
    timestamp: int | None = 1_700_000_000_000
    timestamp_type: int = 0


def batch(*offsets: int, read_mark: int | None = None) -> BatchMessage:
    return to_batch_message(TOPIC, FetchedBatch([Rec(o) for o in offsets]), read_mark, generation_id=1)


def test_a_batch_message_carries_its_records_and_the_last_offset() -> None:
    message = batch(10, 11, 12, read_mark=9)
    assert [r.offset for r in message.records] == [10, 11, 12]
    assert message.offset == 12
    assert message.first_offset == 10
    assert message.tp == TOPIC
    assert message.timestamp == pytest.approx(1_700_000_000.0)


def test_records_already_read_are_left_out() -> None:
    assert [r.offset for r in unread([Rec(4), Rec(5), Rec(6)], read_mark=5)] == [5, 6]
    assert [r.offset for r in unread([Rec(4)], read_mark=None)] == [4]
    message = batch(4, 5, 6, read_mark=6)
    assert [r.offset for r in message.records] == [6]


def test_a_batch_answers_for_the_offsets_between_the_read_mark_and_its_first_record() -> None:
    # After record 20 was read, a transaction marker or a compacted record at 21-22: the batch at 23 answers
    # for them too, or the commit would wait on offsets no record will ever carry.
    assert first_answered(23, read_mark=20) == 21
    # After a seek the mark is the next offset to read, which the first record carries.
    assert first_answered(30, read_mark=30) == 30
    assert first_answered(7, read_mark=None) == 7


def test_the_ack_covers_the_range_less_what_is_committed_or_acked() -> None:
    message = batch(10, 11, 12, 13, read_mark=9)
    assert answered_offsets(message, committed=None, already=set()) == [10, 11, 12, 13]
    assert answered_offsets(message, committed=12, already=set()) == [12, 13]
    assert answered_offsets(message, committed=None, already={11}) == [10, 12, 13]


@pytest.fixture
def consumer() -> Any:
    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    consumer = app.consumer
    consumer._committed_offset[TOPIC] = 100  # the next offset to read, as after a seek to committed
    return consumer


def test_an_acked_batch_commits_past_its_last_record(consumer: Any) -> None:
    message = batch(100, 101, 102, 105, read_mark=100)  # 103-104: no record (a marker, compaction)
    assert consumer.ack(message) is True
    assert consumer._new_offset(TOPIC) == 106


def test_a_later_batch_acked_first_commits_nothing_until_the_earlier_one_is(consumer: Any) -> None:
    first = batch(100, 101, 102, read_mark=100)
    second = batch(103, 104, read_mark=102)
    consumer.ack(second)
    assert consumer._new_offset(TOPIC) is None  # 100-102 still in flight
    consumer.ack(first)
    assert consumer._new_offset(TOPIC) == 105


def test_a_batch_is_acked_once(consumer: Any) -> None:
    message = batch(100, 101, read_mark=100)
    assert consumer.ack(message) is True
    assert consumer.ack(message) is False
    assert consumer._new_offset(TOPIC) == 102
    assert consumer._new_offset(TOPIC) is None  # nothing new since


def test_the_hot_topics_are_batch_fed_and_nothing_else() -> None:
    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    assert app.transport.batched_topics == {
        "herald.events",
        "herald.routed",
        "herald.deliver.email",
        "herald.deliver.push",
        "herald.deliver.sms",
        "herald.deliver.inapp",
        "herald.inbox.commands",
    }
