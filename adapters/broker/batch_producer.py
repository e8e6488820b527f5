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


class Outgoing(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # None: by the key, as the producer's partitioner chooses
    headers: tuple[tuple[str, bytes], ...] = ()


async def send_batches(producer: AIOKafkaProducer, records: Iterable[Outgoing]) -> list[asyncio.Future[Any]]:
    """Hand `records` to `producer` as record batches; the futures resolve when each batch is acknowledged.
    A record over the producer's batch size goes in a batch of its own (aiokafka accepts any first record),
    so the caller's own size budget is the only limit."""
    by_partition: dict[tuple[str, int], list[Outgoing]] = {}
    known: set[str] = set()
    for record in records:
        if record.topic not in known:
            await producer.client._wait_on_metadata(record.topic)
            known.add(record.topic)
        partition = producer._partition(record.topic, record.partition, None, None, record.key, record.value)
        by_partition.setdefault((record.topic, partition), []).append(record)
    futures: list[asyncio.Future[Any]] = []
    for (topic, partition), outgoing in by_partition.items():
        batch = producer.create_batch()
        for record in outgoing:
            # The C batch builder wants a list.
            key, value, headers = record.key, record.value, list(record.headers)
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures
