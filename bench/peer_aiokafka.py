"""The routing peer as a plain aiokafka batch loop: `getmany`, the peer job on each event, the outputs
appended to one aiokafka batch per output partition (`create_batch`/`send_batch`, partition by aiokafka's
DefaultPartitioner on the key), every batch acknowledged before the offsets are committed (at least once).
`python -m bench.peer_aiokafka BOOTSTRAP SOURCE EXPECTED USERS RESULT.json`, in its own process with the
worker's environment (HERALD_* names the topics, rules and templates)."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from bench.peer_job import RecipientStates, RoutingJob
from kernel.settings import load_settings

FETCH_RECORDS = 2000  # per getmany; FIELD-NOTES' batch loop took 2,000 at a time


class PartitionBatches:
    """Open aiokafka batches, one per (topic, partition); a full one is sent and a fresh one started."""

    def __init__(self, producer: AIOKafkaProducer, partitions: dict[str, list[int]]) -> None:
        self._producer = producer
        self._partitions = partitions
        self._open: dict[tuple[str, int], Any] = {}
        self.sent: list[asyncio.Future[Any]] = []

    async def append(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        partitions = self._partitions[topic]
        partition = DefaultPartitioner()(key, partitions, partitions)
        batch = self._open.get((topic, partition))
        if batch is None:
            batch = self._open[(topic, partition)] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            await self._send(topic, partition)
            batch = self._open[(topic, partition)] = self._producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)

    async def _send(self, topic: str, partition: int) -> None:
        batch = self._open.pop((topic, partition))
        self.sent.append(await self._producer.send_batch(batch, topic, partition=partition))

    async def flush(self) -> None:
        """Send every open batch and wait until the broker acknowledged all sent since the last flush."""
        for topic, partition in list(self._open):
            await self._send(topic, partition)
        sent, self.sent = self.sent, []
        await asyncio.gather(*sent)


async def run(bootstrap: str, source: str, expected: int, users: int) -> dict[str, Any]:
    settings = load_settings()
    job = RoutingJob(settings, RecipientStates(users, settings.partitions))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"bench-peer-aiokafka-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    try:
        # Assigned, not subscribed, as the pass-through: a group join costs seconds on the embedded broker and
        # the clock starts at the first batch anyway. Offsets are still committed to the group.
        await consumer.topics()
        tps = [TopicPartition(source, p) for p in sorted(consumer.partitions_for_topic(source) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        partitions = {t: sorted(await producer.partitions_for(t)) for t in job.output_topics}
        batches = PartitionBatches(producer, partitions)
        started = last = cpu = 0.0
        while job.tally.events < expected:
            fetched = await consumer.getmany(timeout_ms=500, max_records=FETCH_RECORDS)
            if not fetched:
                continue
            if not started:
                started, cpu = time.monotonic(), time.process_time()
            for records in fetched.values():
                for message in records:
                    for record in job.outputs(message.value):
                        await batches.append(record.topic, record.key, record.value)
            last = time.monotonic()
            await batches.flush()
            await consumer.commit()
        flushed, cpu = time.monotonic(), time.process_time() - cpu
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "peer": "aiokafka",
        "events": job.tally.events,
        "records": job.tally.records,
        "rejected": job.tally.rejected,
        "seconds": flushed - started,
        "processing_seconds": last - started,
        "cpu_seconds": cpu,  # the process's, over `seconds`
    }


def main() -> None:
    bootstrap, source, expected, users, out = sys.argv[1:6]
    result = asyncio.run(run(bootstrap, source, int(expected), int(users)))
    Path(out).write_bytes(orjson.dumps(result))


if __name__ == "__main__":
    main()
