"""Reading a time range of a topic's partitions with a plain consumer, for the commands that read one back
(`herald trace`, `herald preferences history`): timestamps turned into offsets, checked against the records
they point to, and records fetched up to where each partition ended when the reading began."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from kernel.errors import BrokerError

PATIENCE_SECONDS = 30.0  # without a fetch answer: the broker is gone, say so rather than hang

# Where the record at or after an offset is: (its offset, its timestamp in ms), or None past the end.
RecordAt = Callable[[int], Awaitable[tuple[int, int] | None]]


async def first_offset_at(timestamp_ms: int, low: int, high: int, record_at: RecordAt) -> int:
    """Where to start reading [low, high) for the records at or after `timestamp_ms`: the first such record's
    offset, or one of the empty offsets before it (`high` if none), by bisection, since a partition's
    timestamps rise with its offsets."""
    while low < high:
        middle = (low + high) // 2
        found = await record_at(middle)
        if found is None or found[0] >= high:
            high = middle
        elif found[1] < timestamp_ms:
            low = found[0] + 1
        else:
            high = middle
    return low


async def offsets_at(
    consumer: AIOKafkaConsumer, moment: datetime, ends: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Each partition's first offset at or after `moment`: the broker's answer (ListOffsets by time), checked
    against the record it points to. Tansu 0.6 answers offset 0 whatever the time: a record there from
    before `moment` shows the answer is not one, and the offset is then found by bisection."""
    timestamp_ms = int(moment.timestamp() * 1000)
    answers = await consumer.offsets_for_times({tp: timestamp_ms for tp in ends})
    offsets: dict[TopicPartition, int] = {}
    for tp, end in ends.items():
        answer = answers.get(tp)
        offset = end if answer is None else min(answer.offset, end)
        found = await record_at(consumer, tp, offset, end)
        if found is not None and found[1] < timestamp_ms:
            offset = await first_offset_at(
                timestamp_ms, found[0] + 1, end, partial(record_at, consumer, tp, end=end)
            )
        offsets[tp] = offset
    return offsets


async def record_at(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, end: int
) -> tuple[int, int] | None:
    """The first record at or after `offset` and before `end`: its offset and timestamp."""
    if offset >= end:
        return None
    consumer.seek(tp, offset)
    consumer.resume(tp)
    try:
        batch = await fetch(consumer, {tp: end}, max_records=1)
    finally:
        consumer.pause(tp)
    for record in batch.get(tp, []):
        return (record.offset, record.timestamp) if record.offset < end else None
    return None


async def fetch(
    consumer: AIOKafkaConsumer, stops: dict[TopicPartition, int], max_records: int | None = None
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """The next records of the partitions in `stops` that are short of their stop; {} once none is."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_SECONDS
    while pending := [tp for tp, stop in stops.items() if await consumer.position(tp) < stop]:
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = await consumer.getmany(
            *pending, timeout_ms=500, max_records=max_records
        )
        if any(batch.values()):
            return batch
        if loop.time() > deadline:
            where = ", ".join(str(tp.partition) for tp in pending)
            topic = pending[0].topic
            raise BrokerError(f"no answer for partitions {where} of {topic} in {PATIENCE_SECONDS:.0f} s")
    return {}
