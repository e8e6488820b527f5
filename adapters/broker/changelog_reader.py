"""Reading ranges of changelog partitions with a plain aiokafka consumer, a fetched batch at a time: how a
worker's tables are bulk-loaded when it recovers (streams.runtime.bulk_recovery), at the consumer's own speed
rather than through Faust's per-record hand-off."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

log = logging.getLogger("herald.broker")

# Large fetches: a recovery reads whole logs, and each fetch costs a round trip (on the embedded broker, also
# part of the fetch wait) whatever its size. The partition limit bounds what one fetch holds in memory. At
# 1,000,000 users, 8 MiB fetches and runs of 5,000 read as fast as 32 MiB and 20,000 (bench/RESULTS.md).
FETCH_MAX_BYTES = 8 * 1024 * 1024
PARTITION_FETCH_BYTES = 1024 * 1024
# Short: data is there to read, and the embedded broker holds a fetch for part of its wait even then.
FETCH_WAIT_MS = 50
# Records handed over at most per `getmany`: the caller applies each run before the next fetch is read.
MAX_RECORDS = 5_000
DEFAULT_STALL_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Span:
    """Offsets to read in one partition: from `start` (the first offset to read) to before `end` (the
    partition's high watermark when the reading was planned)."""

    start: int
    end: int

    @property
    def empty(self) -> bool:
        return self.end <= self.start


def within(records: Sequence[Any], end: int) -> Sequence[Any]:
    """The records (in offset order) before `end`."""
    if not records or records[-1].offset < end:
        return records
    return [record for record in records if record.offset < end]


class ReaderStalled(Exception):
    """No record arrived for a while although some partitions had not been read to their end."""


class ChangelogReader:
    """Reads each partition's span once, in order: `async with ChangelogReader(...) as reader`, then
    `async for tp, records in reader.runs()`. A partition is done when its position reaches its span's end
    (a transaction marker or a compacted tail has no record to show for it); `drop(tp)` stops reading one
    early. No consumer group: nothing is committed, and nothing else's assignment changes."""

    def __init__(
        self,
        bootstrap: str | list[str],
        spans: Mapping[TopicPartition, Span],
        *,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        max_records: int = MAX_RECORDS,
    ) -> None:
        self._spans = {tp: span for tp, span in spans.items() if not span.empty}
        self._pending = set(self._spans)
        self._stall_seconds = stall_seconds
        self._max_records = max_records
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a start before the log's (compacted or deleted) beginning
            fetch_max_bytes=FETCH_MAX_BYTES,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )

    async def __aenter__(self) -> ChangelogReader:
        await self._consumer.start()
        try:
            self._consumer.assign(sorted(self._pending))
            for tp in self._pending:
                self._consumer.seek(tp, self._spans[tp].start)
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._consumer.stop()

    @property
    def pending(self) -> frozenset[TopicPartition]:
        return frozenset(self._pending)

    def drop(self, tp: TopicPartition) -> None:
        """Read no more of `tp`."""
        if tp in self._pending:
            self._pending.discard(tp)
            self._consumer.pause(tp)

    async def runs(self) -> AsyncIterator[tuple[TopicPartition, Sequence[Any]]]:
        """Each partition's records in offset order, a fetched run at a time, until every span is read."""
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while self._pending:
            pending = self._pending
            fetched = await self._consumer.getmany(*pending, timeout_ms=500, max_records=self._max_records)
            if any(fetched.values()):
                quiet_since = loop.time()
            for tp, records in fetched.items():
                if tp not in self._pending or not records:
                    continue
                run = within(records, self._spans[tp].end)
                if run:
                    yield tp, run
            for tp in list(self._pending):
                if await self._consumer.position(tp) >= self._spans[tp].end:
                    self.drop(tp)
            if self._pending and loop.time() - quiet_since > self._stall_seconds:
                raise ReaderStalled(f"{len(self._pending)} partition(s) short of their end")
