"""Applying steps' effects on Kafka: records handed to the producer without waiting on each, table writes to
the changelog partition of their input, dead letters with their metric. A batch runs in `settle`, which
waits for every acknowledgement before the batch's offsets may be committed, and runs the batch again when
producing failed."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import faust
import faust.streams as faust_streams

from kernel.topics import TopicNames
from schemas.deadletter import DeadLetterStage
from schemas.status import DeliveryStatus
from streams.effects import Effects, Record, TableWrite
from streams.ops.metrics import WorkerMetrics
from streams.runtime.deadletters import dead_letter
from streams.runtime.tables import Tables
from streams.scheduling.tiers import hold

log = logging.getLogger("herald.worker")

SETTLE_FIRST_DELAY_SECONDS = 0.5
SETTLE_MAX_DELAY_SECONDS = 30.0


def bind_event(event: Any) -> None:
    """Make `event` the current one in this task. Faust's stores find a key's partition through the current
    event, kept in a context variable: batches and tasks started with `gather` need it set."""
    faust_streams._current_event.set(weakref.ref(event))


class Outbox:
    """One batch's way out: what is handed over here is acknowledged before `settle` returns."""

    def __init__(
        self,
        app: faust.App,
        names: TopicNames,
        tables: Tables,
        metrics: WorkerMetrics,
        clock: Callable[[], datetime],
    ) -> None:
        self._app = app
        self._names = names
        self._tables = tables
        self._metrics = metrics
        self._clock = clock
        self._pending: list[Awaitable[Any]] = []

    async def produce(self, record: Record) -> None:
        future = await self._app.producer.send(
            record.topic, record.key, record.value, record.partition, None, None
        )
        self._pending.append(future)

    async def apply(self, event: Any, effects: Effects) -> None:
        """Apply what a step decided for the input `event` (a Faust event). Table writes come first, so a
        status that says "delivered" never reaches the broker before the write that makes a replay skip it
        is handed over (the producer keeps order per partition; `flush` makes it durable)."""
        if effects.writes:
            bind_event(event)
            for write in effects.writes:
                self._write(event.message.partition, write)
        for record in effects.records:
            await self.produce(record)
        now = self._clock()
        for later in effects.later:
            await self.produce(hold(later, now, self._names.scheduled))
            self._metrics.scheduled.labels(reason=later.reason).inc()
        for status in effects.statuses:
            await self.status(status)
        for rejected in effects.rejected:
            await self.dead_letter(event.message, rejected.error, rejected.stage)

    def _write(self, partition: int, write: TableWrite) -> None:
        table = self._tables.by_name(write.table).faust
        if write.value is None:
            table.data.pop(write.key, None)
            # A real tombstone (no value), so compaction drops the key and recovery deletes it; the table's
            # json codec would write `null`, which is kept forever.
            self._pending.append(table.send_changelog(partition, write.key, None, value_serializer="raw"))
        else:
            table.data[write.key] = write.value
            self._pending.append(table.send_changelog(partition, write.key, write.value))

    async def status(self, status: DeliveryStatus) -> None:
        await self.produce(Record.of(self._names.status, status.recipient, status))

    async def dead_letter(self, message: Any, error: BaseException, stage: DeadLetterStage) -> None:
        """Park a message that cannot be processed on the DLQ, with the reason, and count it."""
        record = dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            error=error,
            stage=stage,
        )
        await self.produce(Record(self._names.dlq, message.key, record.to_json()))
        self._metrics.dead_letters.labels(stage=stage, reason=record.reason).inc()
        log.warning(
            "dead-lettered",
            extra={
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "stage": stage,
                "reason": record.reason,
                "error_class": record.error_class,
            },
        )

    async def flush(self) -> None:
        """Wait until everything handed over so far is on the broker; raise if any of it failed."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)


class Settler:
    """Runs each batch of an agent with a fresh `Outbox` until what it produced reached the broker."""

    def __init__(self, new_outbox: Callable[[], Outbox], metrics: WorkerMetrics) -> None:
        self._new_outbox = new_outbox
        self._metrics = metrics

    async def settle(self, agent: str, work: Callable[[Outbox], Awaitable[None]]) -> None:
        """Run a batch's `work` and wait for everything it handed over; if that did not reach the broker, run
        it again until it does. An exception must not leave an agent: on the way out Faust acks the batch's
        messages (a known faust-streaming hazard) and they would be lost. Steps turn bad input into dead
        letters themselves, so what fails here is producing: the broker refusing a record or gone for
        longer than the producer's own retries. Running a batch again repeats only what a crash replay
        would, and the delivered-ids table absorbs that."""
        delay = SETTLE_FIRST_DELAY_SECONDS
        while True:
            outbox = self._new_outbox()
            try:
                await work(outbox)
                await outbox.flush()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._metrics.batch_failures.labels(agent=agent).inc()
                log.error(
                    "batch failed, running it again",
                    extra={
                        "agent": agent,
                        "error_class": type(exc).__name__,
                        "error": str(exc)[:500],
                        "retry_in_seconds": delay,
                    },
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, SETTLE_MAX_DELAY_SECONDS)
