"""End offsets that are right on every Kafka-protocol broker.

ListOffsets (aiokafka's `end_offsets`) is the usual way to ask where a partition ends, but Tansu 0.6, the
embedded broker, answers it with the base offset of the partition's last record batch + 1: short of the
true end whenever that batch holds several records. Readers that stop at that offset miss the tail. Faust's
table recovery is one, and a changelog cut short restores an old value: the delivered-ids table then
forgets recent deliveries and a replay reaches the person twice. A fetch's high watermark is right on every
broker, so each listed end is checked by fetching the batch it points into."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

log = logging.getLogger("herald.broker")

DEFAULT_PATIENCE_SECONDS = 10.0  # then the listed ends are kept: reading stops early at worst


async def checked_end_offsets(
    bootstrap: str | list[str],
    listed: Mapping[TopicPartition, int],
    *,
    patience: float = DEFAULT_PATIENCE_SECONDS,
) -> dict[TopicPartition, int]:
    """`listed` (a ListOffsets answer), raised to each partition's fetch high watermark where it is higher.

    Costs one short-lived consumer and one fetch per non-empty partition; on Kafka the answer is `listed`."""
    ends = dict(listed)
    pending = {tp for tp, end in listed.items() if end is not None and end > 0}
    if not pending:
        return ends
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await probe.start()
    try:
        probe.assign(sorted(pending))
        for tp in pending:
            # The listed end - 1 is at worst the last batch's base offset: fetching it returns that batch
            # and, with it, the partition's true high watermark.
            probe.seek(tp, ends[tp] - 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while pending and loop.time() < deadline:
            await probe.getmany(*pending, timeout_ms=100, max_records=1)
            for tp in list(pending):
                highwater = probe.highwater(tp)
                if highwater is not None:
                    ends[tp] = max(ends[tp], highwater)
                    pending.discard(tp)
    finally:
        await probe.stop()
    if pending:
        # Reading would stop early at worst, as it would have without the check; say so rather than stall.
        log.warning(
            "end offsets unchecked",
            extra={"partitions": len(pending), "reason": f"no fetch answer within {patience} s"},
        )
    return ends


async def end_offsets(
    consumer: AIOKafkaConsumer,
    bootstrap: str | list[str],
    partitions: Iterable[TopicPartition],
) -> dict[TopicPartition, int]:
    """Where each partition ends: `consumer.end_offsets`, checked against a fetch (see the module)."""
    listed = await consumer.end_offsets(list(partitions))
    return await checked_end_offsets(bootstrap, listed)
