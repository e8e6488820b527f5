"""The limit: a plain consume → produce pass-through of the same events, partition for partition, at least
once (each batch is produced and acknowledged before its offsets are committed), in its own process like
a worker. `python -m bench.passthrough aiokafka|confluent BOOTSTRAP IN OUT EXPECTED RESULT.json`"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

import orjson


async def run_aiokafka(bootstrap: str, source: str, sink: str, expected: int) -> tuple[int, float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"bench-pass-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    # Assigned, not subscribed: a group join costs seconds on the embedded broker and measures nothing here.
    await consumer.topics()
    tps = [TopicPartition(source, p) for p in sorted(consumer.partitions_for_topic(source) or ())]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    moved, started = 0, 0.0
    try:
        while moved < expected:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            if not batch:
                continue
            if not started:
                started = time.monotonic()
            futures = []
            for tp, records in batch.items():
                for record in records:
                    futures.append(
                        await producer.send(sink, record.value, record.key, partition=tp.partition)
                    )
            await asyncio.gather(*futures)
            await consumer.commit()
            moved += len(futures)
        return moved, time.monotonic() - started
    finally:
        await producer.stop()
        await consumer.stop()


def run_confluent(bootstrap: str, source: str, sink: str, expected: int) -> tuple[int, float]:
    # Typed from confluent-kafka 2.13 on; quixstreams (the bench extra) holds it below that.
    from confluent_kafka import (  # type: ignore[import-untyped, unused-ignore]
        OFFSET_BEGINNING,
        Consumer,
        KafkaException,
        Producer,
        TopicPartition,
    )

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-pass-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    partitions = consumer.list_topics(source, timeout=10).topics[source].partitions
    consumer.assign([TopicPartition(source, p, OFFSET_BEGINNING) for p in sorted(partitions)])
    moved, started = 0, 0.0
    try:
        while moved < expected:
            records = consumer.consume(num_messages=5000, timeout=0.5)
            if not records:
                continue
            if not started:
                started = time.monotonic()
            for record in records:
                if record.error():
                    raise KafkaException(record.error())
                while True:
                    try:
                        producer.produce(
                            sink, record.value(), record.key(), partition=record.partition() or 0
                        )
                        break
                    except BufferError:
                        producer.poll(0.01)
            if producer.flush(30):
                raise RuntimeError("the pass-through's producer could not flush")
            consumer.commit(asynchronous=True)
            moved += len(records)
        return moved, time.monotonic() - started
    finally:
        consumer.close()


def main() -> None:
    client, bootstrap, source, sink, expected, out = sys.argv[1:7]
    if client == "aiokafka":
        moved, seconds = asyncio.run(run_aiokafka(bootstrap, source, sink, int(expected)))
    else:
        moved, seconds = run_confluent(bootstrap, source, sink, int(expected))
    Path(out).write_bytes(orjson.dumps({"client": client, "events": moved, "seconds": seconds}))


if __name__ == "__main__":
    main()
