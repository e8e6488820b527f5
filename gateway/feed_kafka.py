"""The inbox feed read with aiokafka: every partition, no consumer group, from the end. A gateway keeps no
history, so it is ready as soon as it is positioned, however long the topic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from adapters.broker.fetch_schedule import FetchPace, wake_after_reaped_fetches
from gateway.feed import FeedRecord, FeedSink, InvalidFeedRecord, decode
from gateway.metrics import GatewayMetrics
from kernel.readiness import Readiness

log = logging.getLogger(__name__)

# Records handed over per fetch: the feed is small frames, and every instance reads all of it.
MAX_RECORDS = 10_000


class KafkaFeed:
    """No consumer group: each instance must see every user's records, because a user's sockets may be on
    any instance. After a broker error it starts again from the end, and the sink hears it lost records."""

    def __init__(
        self,
        bootstrap_servers: list[str],
        topic: str,
        metrics: GatewayMetrics,
        *,
        retry_seconds: float = 2.0,
        client_id: str = "herald-gateway",
        fetch_max_wait_ms: int | None = None,
        busy_fetch_max_wait_ms: int = 100,
        idle_fetch_max_wait_ms: int = 100,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        # None: aiokafka's own default (500 ms).
        self._fetch_max_wait_ms = fetch_max_wait_ms if fetch_max_wait_ms is not None else 500
        self._busy_fetch_max_wait_ms = busy_fetch_max_wait_ms
        self._idle_fetch_max_wait_ms = idle_fetch_max_wait_ms
        self._topic = topic
        self._metrics = metrics
        self._retry_seconds = retry_seconds
        self._client_id = client_id
        self._readiness = Readiness(False, "connecting to the broker")

    @property
    def readiness(self) -> Readiness:
        return self._readiness

    async def run(self, sink: FeedSink) -> None:
        try:
            while True:
                try:
                    await self._consume(sink)
                except KafkaError as exc:
                    self._become(False, f"broker error: {type(exc).__name__}; retrying", logging.WARNING)
                await asyncio.sleep(self._retry_seconds)
        except asyncio.CancelledError:
            self._readiness = Readiness(False, "stopped")
            raise
        except Exception as exc:
            self._readiness = Readiness(False, f"failed: {type(exc).__name__}")
            raise

    async def _consume(self, sink: FeedSink) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            # Only reached if a position falls out of the topic's retention, an hour behind by default.
            auto_offset_reset="latest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        live = False
        try:
            await consumer.start()
            # aiokafka's fetch routine can otherwise sit out its whole wait after a fetch (see the function).
            wake_after_reaped_fetches(consumer._fetcher)
            partitions = consumer.partitions_for_topic(self._topic)
            if not partitions:
                # The worker creates it; a fresh consumer fetches fresh metadata, so the next attempt sees it.
                self._become(False, f"waiting for topic {self._topic}", logging.INFO)
                return
            assignment = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            consumer.assign(assignment)
            # Returns once every partition's position is resolved: what is appended from here is read.
            await consumer.seek_to_end(*assignment)
            live = True
            sink.positioned()
            self._become(True, f"reading {len(assignment)} partitions of {self._topic}", logging.INFO)
            # Fewer, larger fetches while the feed is busy, and fewer empty ones while it is idle (FetchPace).
            pace = FetchPace(
                self._fetch_max_wait_ms, self._busy_fetch_max_wait_ms, self._idle_fetch_max_wait_ms
            )
            fetcher = consumer._fetcher
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
                handed = sum(len(records) for records in batches.values())
                fetcher._fetch_max_wait_ms = pace.handed_over(handed)  # read for each request it builds
                for records in batches.values():
                    sink.feed(self._decoded(records))
        finally:
            if live and not _cancelling():
                sink.lost()
            if self._readiness.ready:
                self._become(False, "disconnected", logging.INFO)
            await _stop_quietly(consumer)

    def _become(self, ready: bool, reason: str, level: int) -> None:
        # Logged on change only, so a gateway waiting minutes for its topic or broker logs it once.
        if self._readiness != Readiness(ready, reason):
            self._readiness = Readiness(ready, reason)
            log.log(level, "gateway feed %s: %s", "ready" if ready else "not ready", reason)

    def _decoded(self, records: Iterable[Any]) -> list[FeedRecord]:
        decoded = []
        for record in records:
            try:
                decoded.append(decode(record.key, record.value, record.headers or ()))
            except InvalidFeedRecord as exc:
                # Where the record is and what is wrong with it; never its key (a user id) or value.
                log.warning(
                    "skipping feed record %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc
                )
                self._metrics.invalid_records.inc()
        return decoded


def _cancelling() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        # aiokafka raises CancelledError from stop() soon after start() (aio-libs/aiokafka#647); only a
        # cancellation of this task itself is passed on.
        if _cancelling():
            raise
    except Exception as exc:
        log.debug("gateway consumer did not stop cleanly: %s", type(exc).__name__)
