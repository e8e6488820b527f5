"""adapters.broker.faust_transport.set_fetching against the broker. Faust pauses a partition only in its own
books; aiokafka kept fetching it, left the records undrained, and held back every fetch to that broker for
100 ms each time such a result arrived (after recovery: the worker's first write to each of its tables'
changelog partitions). A paused partition must not be fetched at all, and must lose nothing: once resumed,
it is read from the last record handed over."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.broker.faust_transport import set_fetching
from adapters.broker.topics import ensure_topics

pytestmark = pytest.mark.integration

RECORDS = 5


async def _produce(bootstrap_servers: list[str], topic: str, partition: int, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


async def _read(consumer: AIOKafkaConsumer, wanted: int) -> dict[int, list[bytes]]:
    got: dict[int, list[bytes]] = {}
    async with asyncio.timeout(30):
        while sum(len(values) for values in got.values()) < wanted:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                got.setdefault(tp.partition, []).extend(r.value or b"" for r in records)
    return got


async def test_a_paused_partition_is_not_fetched_and_resumes_where_it_was(
    bootstrap_servers: list[str],
) -> None:
    topic = f"paused-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap_servers, [topic], 2, 1)
    live, paused = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        consumer.assign([live, paused])
        await consumer.seek_to_beginning(live, paused)
        await _produce(bootstrap_servers, topic, 1, [b"before"])
        # Fetched and not handed over, as Faust leaves a partition it paused in its own books.
        async with asyncio.timeout(30):
            while paused not in consumer._fetcher._records:
                await asyncio.sleep(0.01)

        set_fetching(consumer, [paused, TopicPartition(topic, 7)], fetching=False)  # 7: not assigned

        assert consumer.paused() == {paused}
        assert paused not in consumer._fetcher._records  # nothing held undrained for it
        await _produce(bootstrap_servers, topic, 1, [b"while paused"])
        await _produce(bootstrap_servers, topic, 0, [b"%d" % n for n in range(RECORDS)])
        assert await _read(consumer, RECORDS) == {0: [b"%d" % n for n in range(RECORDS)]}
        assert paused not in consumer._fetcher._records  # still not fetched

        set_fetching(consumer, [paused], fetching=True)

        assert consumer.paused() == set()
        assert await _read(consumer, 2) == {1: [b"before", b"while paused"]}
    finally:
        await consumer.stop()
