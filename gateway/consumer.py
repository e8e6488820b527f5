"""The gateway's feed: every instance reads all partitions of the in-app topic and the compacted inbox topic,
from the beginning, without a consumer group, and so holds every user's inbox and sees every live message."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from adapters.broker.offsets import end_offsets
from adapters.broker.topics import ensure_topics
from gateway.metrics import GatewayMetrics
from kernel.errors import TopicCreationError
from kernel.readiness import Readiness
from schemas.inbox import InboxStateChange
from schemas.notifications import InAppNotification

log = logging.getLogger(__name__)


class FeedSink(Protocol):
    """What the feed hands its records to (the inbox service)."""

    def notification(self, notification: InAppNotification, raw: bytes) -> None: ...

    def state(self, change: InboxStateChange) -> None: ...

    def caught_up(self) -> None:
        """Everything that was on both topics when the feed started has been handed over."""


class NotificationFeed(Protocol):
    """The gateway's source of notifications and inbox state; tests pass a fake."""

    @property
    def readiness(self) -> Readiness: ...

    async def run(self, sink: FeedSink) -> None:
        """Hand records to `sink` until cancelled."""


@dataclass(frozen=True, slots=True)
class FeedTopics:
    inapp: str
    inbox: str
    partitions: int
    replication_factor: int


class KafkaFeed:
    """Reads both topics with aiokafka. No consumer group: each instance must see every user's messages,
    because a user's sockets may be on any instance."""

    def __init__(
        self,
        bootstrap_servers: list[str],
        topics: FeedTopics,
        metrics: GatewayMetrics,
        *,
        retry_seconds: float = 2.0,
        client_id: str = "herald-gateway",
        fetch_max_wait_ms: int | None = None,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        # None: aiokafka's own default (500 ms).
        self._fetch_max_wait_ms = fetch_max_wait_ms if fetch_max_wait_ms is not None else 500
        self._topics = topics
        self._metrics = metrics
        self._retry_seconds = retry_seconds
        self._client_id = client_id
        self._readiness = Readiness(False, "connecting to the broker")
        # Where to resume after a broker error: the inbox already holds everything before these offsets.
        self._positions: dict[TopicPartition, int] = {}
        self._caught_up = False

    @property
    def readiness(self) -> Readiness:
        return self._readiness

    async def run(self, sink: FeedSink) -> None:
        try:
            while True:
                try:
                    await self._ensure_inbox_topic()
                    await self._consume(sink)
                except (KafkaError, TopicCreationError) as exc:
                    self._become(False, f"broker error: {type(exc).__name__}; retrying", logging.WARNING)
                await asyncio.sleep(self._retry_seconds)
        except asyncio.CancelledError:
            self._readiness = Readiness(False, "stopped")
            raise
        except Exception as exc:
            self._readiness = Readiness(False, f"failed: {type(exc).__name__}")
            raise

    async def _ensure_inbox_topic(self) -> None:
        topics = self._topics
        await ensure_topics(
            self._bootstrap_servers,
            [topics.inbox],
            topics.partitions,
            topics.replication_factor,
            compacted={topics.inbox},
        )

    async def _consume(self, sink: FeedSink) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        try:
            await consumer.start()
            assignment: list[TopicPartition] = []
            for topic in (self._topics.inapp, self._topics.inbox):
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    # A fresh consumer fetches fresh metadata: the next attempt sees the topic once created.
                    self._become(False, f"waiting for topic {topic}", logging.INFO)
                    return
                assignment += [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(assignment)
            for partition in assignment:
                if partition in self._positions:
                    consumer.seek(partition, self._positions[partition])
                else:
                    await consumer.seek_to_beginning(partition)
            # Checked against a fetch: the embedded broker can answer short of the last records, and the
            # gateway would call itself caught up before it read the inboxes' tail (adapters.broker.offsets).
            targets = await end_offsets(consumer, self._bootstrap_servers, assignment)
            self._become(
                self._caught_up,
                f"reading {len(assignment)} partitions of {self._topics.inapp} and {self._topics.inbox}",
                logging.INFO,
            )
            while True:
                if not self._caught_up and await _reached_all(consumer, targets):
                    self._caught_up = True
                    sink.caught_up()
                    self._become(True, "caught up", logging.INFO)
                batches = await consumer.getmany(
                    timeout_ms=200 if not self._caught_up else 1000, max_records=2000
                )
                for partition, records in batches.items():
                    self._dispatch(records, sink)
                    if records:
                        self._positions[partition] = records[-1].offset + 1
        finally:
            if self._readiness.ready:
                self._become(False, "disconnected", logging.INFO)
            await _stop_quietly(consumer)

    def _become(self, ready: bool, reason: str, level: int) -> None:
        # Logged on change only, so a gateway waiting minutes for its topic or broker logs it once.
        if self._readiness != Readiness(ready, reason):
            self._readiness = Readiness(ready, reason)
            log.log(level, "gateway feed %s: %s", "ready" if ready else "not ready", reason)

    def _dispatch(self, records: Iterable[Any], sink: FeedSink) -> None:
        for record in records:
            try:
                if record.topic == self._topics.inapp:
                    raw = record.value or b""
                    sink.notification(InAppNotification.model_validate_json(raw), raw)
                elif record.value is not None:  # a tombstone clears a register nobody needs any more
                    sink.state(InboxStateChange.model_validate_json(record.value))
            except ValidationError as exc:
                # It may hold personal data: only where the record is and which fields failed are logged.
                fields = sorted(
                    {".".join(str(part) for part in e["loc"]) or "<record>" for e in exc.errors()}
                )
                log.warning(
                    "skipping undecodable record %s[%d]@%d: invalid %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    ", ".join(fields),
                )
                self._metrics.invalid_records.inc()


async def _reached_all(consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> bool:
    for partition, end in targets.items():
        position: int = await consumer.position(partition)
        if position < end:
            return False
    return True


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        # aiokafka raises CancelledError from stop() soon after start() (aio-libs/aiokafka#647); only a
        # cancellation of this task itself is passed on.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception as exc:
        log.debug("gateway consumer did not stop cleanly: %s", type(exc).__name__)
