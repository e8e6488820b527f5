"""adapters.broker.faust_transport.seek_to_committed against the broker. Fetching moves a consumer past
records it may then drop (Faust's fetch loop drops a fetch that returns while the flow is stopped, as it is
around the seek after a rebalance); the seek must bring each partition back: to its committed offset, or,
with nothing committed, to the start of its log, which aiokafka's own seek leaves out. A partition it is told
to leave (a table's changelog, which recovery positions) stays where it was."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.broker.faust_transport import seek_to_committed
from adapters.broker.topics import ensure_topics

pytestmark = pytest.mark.integration

RECORDS = 5


async def test_partitions_go_back_to_their_commit_or_to_the_start(bootstrap_servers: list[str]) -> None:
    topic = f"seek-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap_servers, [topic], 3, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        for partition in range(3):
            for n in range(RECORDS):
                await producer.send_and_wait(topic, b"%d" % n, partition=partition)
    finally:
        await producer.stop()

    never, committed, left = (TopicPartition(topic, p) for p in range(3))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=f"seek-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([never, committed, left])
        # Fetched and dropped: every position at the end of its partition, three records of one processed.
        fetched = 0
        while fetched < 3 * RECORDS:
            batch = await consumer.getmany(timeout_ms=1_000)
            fetched += sum(len(records) for records in batch.values())
        assert [await consumer.position(tp) for tp in (never, committed, left)] == [RECORDS] * 3
        await consumer.commit({committed: 3})

        offsets = await seek_to_committed(consumer, lambda tp: tp != left)

        assert offsets == {never: None, committed: 3, left: None}
        assert [await consumer.position(tp) for tp in (never, committed, left)] == [0, 3, RECORDS]
        again: dict[int, list[bytes]] = {}
        while sum(len(values) for values in again.values()) < RECORDS + 2:
            for tp, records in (await consumer.getmany(timeout_ms=1_000)).items():
                again.setdefault(tp.partition, []).extend(r.value for r in records)
        assert again == {0: [b"0", b"1", b"2", b"3", b"4"], 1: [b"3", b"4"]}
    finally:
        await consumer.stop()
