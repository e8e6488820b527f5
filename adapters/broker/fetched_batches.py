"""Whole fetched batches as one Faust message each: the offset bookkeeping behind batch-fed agents.

Faust hands records to an agent one at a time, through its conductor, a stream queue and a few tasks per
record; that hand-off, not the broker or the agent's own work, is what bounds a per-record Faust agent
(about 125 µs per record measured, against about 2 µs for a whole batch). For the topics named batch-fed,
Herald's consumer (adapters.broker.faust_transport) instead hands over everything one fetch returned for a
partition as a single `BatchMessage`. Faust's commit machinery stays in charge: a batch message is acked
like any other, and its ack counts every offset the batch answers for, so a commit never passes a record
that was not processed, and never waits on one that does not exist.

The offsets a batch answers for run from just after the partition's read mark (the last offset Faust
handed over, or the committed offset after a seek) to the batch's last record. Offsets in between that no
record carries (transaction markers, compacted records) are the batch's too: Faust would otherwise track
them as a "gap" that only a later message's ack fills."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from faust.types import TP
from faust.types.tuples import ConsumerMessage


@dataclass(frozen=True, slots=True)
class FetchedBatch:
    """The records of one partition from one fetch, standing in for a single record until Faust turns it
    into a message (`to_batch_message`)."""

    records: Sequence[Any]  # aiokafka ConsumerRecords, in offset order


class BatchMessage(ConsumerMessage):
    """A Faust message that carries a partition's fetched records. Its `offset` is the last record's, so
    Faust's "already read" mark moves past the whole batch; `first_offset` is the first offset its ack
    answers for. Its own key and value are empty: the records are in `records`."""

    records: Sequence[Any]
    first_offset: int


def unread(records: Sequence[Any], read_mark: int | None) -> list[Any]:
    """The records Faust would hand over given the partition's read mark: those at or after it (Faust lets
    the record at the mark through, since after a seek the mark is the next offset to read)."""
    if read_mark is None:
        return list(records)
    return [record for record in records if record.offset >= read_mark]


def first_answered(first_record_offset: int, read_mark: int | None) -> int:
    """The first offset a batch answers for: after the read mark, or its first record if that is earlier
    (after a seek the mark is the next offset to read, which the batch's first record carries)."""
    if read_mark is None:
        return first_record_offset
    return min(first_record_offset, read_mark + 1)


def answered_offsets(message: BatchMessage, committed: int | None, already: set[int]) -> list[int]:
    """The offsets a batch's ack adds to the partition's acked list: its range, less what the committed
    offset already covers and what was acked before."""
    start = message.first_offset if committed is None else max(message.first_offset, committed)
    return [offset for offset in range(start, message.offset + 1) if offset not in already]


def to_batch_message(tp: TP, batch: FetchedBatch, read_mark: int | None, generation_id: int) -> BatchMessage:
    records = unread(batch.records, read_mark)
    # All already read: a message at the batch's last offset, which the fetch loop drops as read.
    last = batch.records[-1]
    first = first_answered(records[0].offset, read_mark) if records else last.offset
    message = BatchMessage(
        tp.topic,
        tp.partition,
        last.offset,
        cast(float, None if last.timestamp is None else last.timestamp / 1000.0),  # Faust's own allows None
        last.timestamp_type,
        [],
        None,
        b"",
        None,
        0,
        0,
        tp,
        generation_id=generation_id,
    )
    message.records = records
    message.first_offset = first
    return message
