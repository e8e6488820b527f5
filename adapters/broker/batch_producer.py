"""Producing many records at once with aiokafka's batch API: one record batch per topic partition, built and
handed to the producer's accumulator whole, instead of one `send` (an await, a partitioner call, an
accumulator lookup) per record. Records keep the order they were given in within each partition, and land
on the partition the default partitioner would choose for their key, as every other producer of Herald's
topics (the CLI, services) does."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import RecordMetadata, TopicPartition


class Outgoing(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # None: by the key, as the producer's partitioner chooses
    headers: tuple[tuple[str, bytes], ...] = ()


class _Partitions:
    """The partition each record goes to, as the producer's `_partition` decides it, without what that costs
    per record: two lists of the topic's partitions built from the metadata, and the partitioner's hash (pure
    Python murmur2) of a key already hashed (a recipient's notifications on several channels' topics share
    their key and partition count). Both together were most of a routing batch's hand-over."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._lists: dict[str, tuple[list[int], list[int]]] = {}
        # A topic's partitions are 0..n-1, so the default partitioner's choice for a key depends on the key
        # and their count alone; another partitioner may choose otherwise (at random, say) and is asked each
        # time.
        default = type(producer._partitioner) is DefaultPartitioner
        self._by_key: dict[tuple[bytes, int], int] | None = {} if default else None

    def __call__(self, record: Outgoing) -> int:
        if record.partition is not None or record.key is None:
            return int(self._producer._partition(record.topic, record.partition, None, None, None, None))
        lists = self._lists.get(record.topic)
        if lists is None:
            metadata = self._producer._metadata
            every = list(metadata.partitions_for_topic(record.topic))
            available = list(metadata.available_partitions_for_topic(record.topic))
            lists = self._lists[record.topic] = (every, available)
        every, available = lists
        if self._by_key is None:
            return int(self._producer._partitioner(record.key, every, available))
        memo = (record.key, len(every))
        partition = self._by_key.get(memo)
        if partition is None:
            partition = self._by_key[memo] = int(self._producer._partitioner(record.key, every, available))
        return partition


async def send_batches(producer: AIOKafkaProducer, records: Iterable[Outgoing]) -> list[asyncio.Future[Any]]:
    """Hand `records` to `producer` as record batches; the futures resolve when each batch is acknowledged, to
    the metadata of the batch's last record (aiokafka's own batch future gives its first offset: a caller
    noting how far a partition was written, as a table store does, wants the last). A record over the
    producer's batch size goes in a batch of its own (aiokafka accepts any first record), so the caller's own
    size budget is the only limit."""
    by_partition: dict[tuple[str, int], list[Outgoing]] = {}
    known: set[str] = set()
    choose = _Partitions(producer)
    for record in records:
        if record.topic not in known:
            await producer.client._wait_on_metadata(record.topic)
            known.add(record.topic)
        partition = choose(record)
        by_partition.setdefault((record.topic, partition), []).append(record)
    futures: list[asyncio.Future[Any]] = []
    for (topic, partition), outgoing in by_partition.items():
        taken, last = _join_queued(producer, TopicPartition(topic, partition), outgoing)
        if last is not None:
            futures.append(last)
        if taken == len(outgoing):
            continue
        batch, count = producer.create_batch(), 0
        for record in outgoing[taken:]:
            # The C batch builder wants a list.
            key, value, headers = record.key, record.value, list(record.headers)
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                sent = await producer.send_batch(batch, topic, partition=partition)
                futures.append(_last_record(sent, count))
                batch, count = producer.create_batch(), 0
                batch.append(key=key, value=value, timestamp=None, headers=headers)
            count += 1
        futures.append(_last_record(await producer.send_batch(batch, topic, partition=partition), count))
    return futures


def _join_queued(
    producer: AIOKafkaProducer, tp: TopicPartition, records: list[Outgoing]
) -> tuple[int, asyncio.Future[Any] | None]:
    """Add what fits of `records` to the partition's batch still queued in the producer, as its own `send`
    does; returns how many went and the last one's future. aiokafka queues one batch per partition, and
    `send_batch` waits until the sender has taken it (`wait_drain`): with many small batches to the same
    partitions (a dedup entry per delivery), those waits took a seventh of the worker's time and a produce
    round trip each."""
    accumulator = producer._message_accumulator
    queued = accumulator._batches.get(tp)
    if not queued or accumulator._closed or accumulator._exception is not None:
        return 0, None
    batch, last, taken = queued[-1], None, 0
    for record in records:
        future = batch.append(record.key, record.value, None, headers=list(record.headers))
        if future is None:  # full
            break
        last, taken = future, taken + 1
    return taken, last


def _last_record(sent: asyncio.Future[Any], count: int) -> asyncio.Future[Any]:
    """`sent` (a batch's future, resolving to its first record's metadata) as its last record's."""
    last: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def done(future: asyncio.Future[Any]) -> None:
        if last.done():
            return
        if future.cancelled():
            last.cancel()
        elif (error := future.exception()) is not None:
            last.set_exception(error)
        else:
            first: RecordMetadata | None = future.result()  # None when the producer asks for no acks
            last.set_result(None if first is None else first._replace(offset=first.offset + count - 1))

    sent.add_done_callback(done)
    return last
