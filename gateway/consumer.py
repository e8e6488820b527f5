"""The in-app feed: each gateway reads all partitions of the in-app topic, live from the end, groupless."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from gateway.metrics import GatewayMetrics
from schemas.notifications import InAppNotification

log = logging.getLogger(__name__)

Deliver = Callable[[InAppNotification], None]


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str


class NotificationFeed(Protocol):
    """What the gateway needs from its source of in-app notifications; tests pass a fake."""

    @property
    def readiness(self) -> Readiness: ...

    async def run(self, deliver: Deliver) -> None:
        """Call `deliver` for each notification until cancelled."""


class KafkaInAppFeed:
    """Reads the in-app topic with aiokafka. No consumer group: each instance must see every user's messages,
    because a user's sockets may be on any instance."""

    def __init__(
        self,
        bootstrap_servers: list[str],
        topic: str,
        metrics: GatewayMetrics,
        *,
        retry_seconds: float = 2.0,
        client_id: str = "herald-gateway",
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._metrics = metrics
        self._retry_seconds = retry_seconds
        self._client_id = client_id
        self._readiness = Readiness(False, "connecting to the broker")

    @property
    def readiness(self) -> Readiness:
        return self._readiness

    async def run(self, deliver: Deliver) -> None:
        try:
            while True:
                try:
                    await self._consume(deliver)
                except KafkaError as exc:
                    # Positions restart from the end on reconnect: this slice forwards live messages only.
                    self._become(False, f"broker error: {type(exc).__name__}; retrying", logging.WARNING)
                await asyncio.sleep(self._retry_seconds)
        except asyncio.CancelledError:
            self._readiness = Readiness(False, "stopped")
            raise
        except Exception as exc:
            self._readiness = Readiness(False, f"failed: {type(exc).__name__}")
            raise

    async def _consume(self, deliver: Deliver) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        try:
            await consumer.start()
            partitions = consumer.partitions_for_topic(self._topic)
            if not partitions:
                # A fresh consumer fetches fresh metadata, so the next attempt sees the topic once created.
                self._become(False, f"waiting for topic {self._topic}", logging.INFO)
                return
            assignment = [TopicPartition(self._topic, partition) for partition in sorted(partitions)]
            consumer.assign(assignment)
            await consumer.seek_to_end(*assignment)
            for partition in assignment:
                await consumer.position(partition)
            self._become(True, f"reading {len(assignment)} partitions of {self._topic}", logging.INFO)
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                for records in batches.values():
                    for record in records:
                        self._dispatch(record, deliver)
        finally:
            if self._readiness.ready:
                self._become(False, "disconnected", logging.INFO)
            await _stop_quietly(consumer)

    def _become(self, ready: bool, reason: str, level: int) -> None:
        # Logged on change only, so a gateway waiting minutes for its topic or broker logs it once.
        if self._readiness != Readiness(ready, reason):
            self._readiness = Readiness(ready, reason)
            log.log(level, "in-app feed %s: %s", "ready" if ready else "not ready", reason)

    def _dispatch(self, record: Any, deliver: Deliver) -> None:
        try:
            notification = InAppNotification.model_validate_json(record.value or b"")
        except ValidationError as exc:
            # The body may hold personal data, so only where the record is and which fields failed are logged.
            fields = sorted(
                {".".join(str(part) for part in error["loc"]) or "<record>" for error in exc.errors()}
            )
            log.warning(
                "skipping undecodable in-app record %s[%d]@%d: invalid %s",
                record.topic,
                record.partition,
                record.offset,
                ", ".join(fields),
            )
            self._metrics.invalid_records.inc()
            return
        deliver(notification)


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
        log.debug("in-app consumer did not stop cleanly: %s", type(exc).__name__)
