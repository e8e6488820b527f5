"""adapters/broker/batch_producer.py against the broker: record batches per partition land where the default
partitioner puts each key (as the CLI's and services' producers do, so a user's state and events meet), in
the order given, and a batch over the producer's batch size is split, not refused."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

from adapters.broker.batch_producer import Outgoing, send_batches
from tests.integration.stack import read_topic

pytestmark = pytest.mark.integration

PARTITIONS = 4


async def test_records_land_on_their_keys_partitions_in_order(bootstrap_servers: list[str]) -> None:
    topic = f"batches-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    # A small batch size, so each partition's records need several batches.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", max_batch_size=1024)
    await producer.start()
    try:
        records = [Outgoing(topic, f"user-{n % 37}".encode(), b"%d" % n) for n in range(2_000)]
        records.append(Outgoing(topic, b"pinned", b"big" * 2_000, partition=2))  # over the batch size
        for future in await send_batches(producer, records):
            await future
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
