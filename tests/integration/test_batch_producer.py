"""adapters/broker/batch_producer.py against the broker: record batches per partition land where the default
partitioner puts each key (as the CLI's and services' producers do, so a user's state and events meet), in
the order given, a batch over the producer's batch size is split, not refused, and each batch's
acknowledgement names its last record."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from adapters.broker.batch_producer import Outgoing, send_batches
from adapters.broker.topics import ensure_topics
from tests.integration.stack import read_topic

pytestmark = pytest.mark.integration

PARTITIONS = 4


async def test_records_land_on_their_keys_partitions_in_order(bootstrap_servers: list[str]) -> None:
    topic = f"batches-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap_servers, [topic], PARTITIONS, 1)
    # A small batch size, so each partition's records need several batches.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", max_batch_size=1024)
    await producer.start()
    try:
        records = [Outgoing(topic, f"user-{n % 37}".encode(), b"%d" % n) for n in range(2_000)]
        records.append(Outgoing(topic, b"pinned", b"big" * 2_000, partition=2))  # over the batch size
        acknowledged = [await future for future in await send_batches(producer, records)]
    finally:
        await producer.stop()

    read = await read_topic(bootstrap_servers, topic, until=len(records))
    assert len(read) == len(records)
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for record in read:
        if record.key == b"pinned":
            assert record.partition == 2 and len(record.value) == 6_000
            continue
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % PARTITIONS
        by_key[record.key].append(int(record.value))
    assert all(values == sorted(values) for values in by_key.values())
    assert sum(len(values) for values in by_key.values()) == 2_000
    # Each batch's acknowledgement names its last record: per partition, the last of all is the last read.
    last_read: dict[int, int] = {}
    for record in read:
        last_read[record.partition] = max(record.offset, last_read.get(record.partition, -1))
    last_acknowledged: dict[int, int] = {}
    for acked in acknowledged:
        last_acknowledged[acked.partition] = max(acked.offset, last_acknowledged.get(acked.partition, -1))
    assert len(acknowledged) > PARTITIONS and last_acknowledged == last_read


async def test_small_batches_to_a_busy_partition_join_the_queued_one_in_order(
    bootstrap_servers: list[str],
) -> None:
    """Many small hand-overs at once (a dedup entry per delivery) to the same partitions, where aiokafka
    already has a batch queued: they join it, in order, and each one's acknowledgement names its last
    record, wherever that landed."""
    topic = f"joins-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap_servers, [topic], 2, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", max_batch_size=2048)
    await producer.start()
    try:
        handed = [
            await send_batches(
                producer, [Outgoing(topic, b"k", b"%d-%d" % (call, n), partition=call % 2) for n in range(3)]
            )
            for call in range(300)
        ]
        acknowledged = [[await future for future in futures] for futures in handed]
    finally:
        await producer.stop()

    read = await read_topic(bootstrap_servers, topic, until=900)
    at = {record.value: (record.partition, record.offset) for record in read}
    assert len(at) == 900
    for partition in (0, 1):
        values = [r.value for r in sorted(read, key=lambda r: r.offset) if r.partition == partition]
        assert values == [b"%d-%d" % (call, n) for call in range(partition, 300, 2) for n in range(3)]
    for call, metadata in enumerate(acknowledged):
        assert (metadata[-1].partition, metadata[-1].offset) == at[b"%d-2" % call]
