"""Applying steps' effects on Kafka: records gathered and produced together with the batch API at `flush`,
table writes to the changelog partition of their input, dead letters with their metric. A batch runs in
`settle`, which waits for every acknowledgement before the batch's offsets may be committed, and runs the
batch again when producing failed. Nothing over the record budget reaches the producer: an input that would
produce such a record goes to the DLQ (`too_large`) instead of any of its effects."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, cast

import faust
import faust.streams as faust_streams
from faust.serializers import codecs
from faust.types import TP

from adapters.broker.batch_producer import Outgoing, send_batches
from kernel.errors import RecordTooLarge
from kernel.topics import TopicNames
from schemas.deadletter import DeadLetterStage
from schemas.status import DeliveryStatus
from streams.effects import Effects, Record, TableName, TableWrite
from streams.ops.metrics import WorkerMetrics
from streams.runtime.changelog_writers import persist_offset
from streams.runtime.deadletters import MAX_KEY_BYTES, dead_letter, original_room
from streams.runtime.tables import Tables
from streams.scheduling.tiers import hold

log = logging.getLogger("herald.worker")

SETTLE_FIRST_DELAY_SECONDS = 0.5
SETTLE_MAX_DELAY_SECONDS = 30.0


# Hands records to the broker; the awaitables resolve as they are acknowledged.
Publish = Callable[[Sequence[Outgoing]], Awaitable[list[Awaitable[Any]]]]


def kafka_publisher(app: faust.App) -> Publish:
    """The app's producer, fed record batches (adapters.broker.batch_producer)."""

    async def publish(records: Sequence[Outgoing]) -> list[Awaitable[Any]]:
        producer = app.producer._ensure_producer()  # type: ignore[attr-defined]  # the aiokafka producer
        return list(await send_batches(producer, records))  # list is invariant: Futures as Awaitables

    return publish


def bind_event(event: Any) -> None:
    """Make `event` the current one in this task. Faust's stores find a key's partition through the current
    event, kept in a context variable: batches and tasks started with `gather` need it set."""
    faust_streams._current_event.set(weakref.ref(event))


class Outbox:
    """One batch's way out: what is handed over here is acknowledged before `settle` returns."""

    def __init__(
        self,
        publish: Publish,
        names: TopicNames,
        tables: Tables,
        metrics: WorkerMetrics,
        clock: Callable[[], datetime],
        max_record_bytes: int,
    ) -> None:
        self._publish = publish
        self._names = names
        self._tables = tables
        self._metrics = metrics
        self._clock = clock
        self._max_record_bytes = max_record_bytes
        self._records: list[Outgoing] = []
        self._changelog: list[Outgoing] = []

    def produce(self, record: Record) -> None:
        """Take `record` for the next `flush`; RecordTooLarge, before it is taken, if it is over budget."""
        self._check(len(record.key or b"") + len(record.value or b""), f"a record for {record.topic}")
        self._records.append(
            Outgoing(record.topic, record.key, record.value, record.partition, record.headers)
        )

    def apply(
        self, event: Any, effects: Effects, stage: DeadLetterStage, message: Any = None
    ) -> RecordTooLarge | None:
        """Apply what a step decided for the input `message` (a record of the Faust `event`, or by default
        the event's own message). Tables change in memory at once; records, then the changelog writes, are
        handed to the producer at `flush`: a caller that must have a write on the broker before something
        else (the dedup entry before a "delivered" status) flushes in between.

        All or nothing: if any record or table value is over the budget, none of the effects is applied and
        the input goes to the DLQ (`too_large`, at `stage`); the error is returned. Part of an input's
        effects would leave state that says otherwise: a throttle counting a send that never went, a status
        for a notification that was dropped, a digest missing an event its status says it holds."""
        message = event.message if message is None else message
        try:
            writes, records = self._encode(effects)
        except RecordTooLarge as exc:
            self.dead_letter(message, exc, stage)
            return exc
        if writes:
            bind_event(event)
            for write, key, value in writes:
                self._write(message.partition, write, key, value)
        self._records.extend(Outgoing(r.topic, r.key, r.value, r.partition, r.headers) for r in records)
        for later in effects.later:
            self._metrics.scheduled.labels(reason=later.reason).inc()
        for rejected in effects.rejected:
            self.dead_letter(message, rejected.error, rejected.stage)
        return None

    def _encode(self, effects: Effects) -> tuple[list[tuple[TableWrite, bytes, bytes | None]], list[Record]]:
        """The effects as they will be produced (table values with the tables' codec, held records wrapped
        for the scheduler), each checked against the budget; raises RecordTooLarge for the first that is
        over it."""
        writes = []
        for write in effects.writes:
            value = None if write.value is None else codecs.dumps("json", write.value)
            key = codecs.dumps("json", write.key)
            self._check(len(key) + len(value or b""), f"the {write.table} table's value")
            writes.append((write, key, value))
        now = self._clock()
        records = [
            *effects.records,
            *(hold(later, now, self._names.scheduled) for later in effects.later),
            *(Record.of(self._names.status, status.recipient, status) for status in effects.statuses),
        ]
        for record in records:
            self._check(len(record.key or b"") + len(record.value or b""), f"a record for {record.topic}")
        return writes, records

    def _check(self, size: int, what: str) -> None:
        if size > self._max_record_bytes:
            raise RecordTooLarge(
                f"{what} would be {size} bytes, over HERALD_MAX_RECORD_BYTES ({self._max_record_bytes})"
            )

    def _write(self, partition: int, write: TableWrite, key: bytes, value: bytes | None) -> None:
        table = self._tables.by_name(write.table).faust
        if write.value is None:
            table.data.pop(write.key, None)
        else:
            table.data[write.key] = write.value
        # Sent as the bytes measured against the budget (the table's own json codec, so recovery reads it
        # back as before); a delete is a real tombstone (no value), so compaction drops the key and recovery
        # deletes it, where the codec would write `null`, which is kept forever.
        # Produced with the batch's records at `flush`, after those taken so far: a table change must not
        # reach the broker ahead of the records that go with it (a digest's bucket without its scheduled
        # release would never be sent after a crash: the replay finds the bucket and schedules nothing). Not
        # through Faust's `send_changelog`, which queues each record for a task that produces them one by one
        # (a sixth of the worker's time delivering); `flush` notes the stores' offsets as its callback would.
        self._changelog.append(Outgoing(self._names.changelogs[write.table], key, value, partition))

    def status(self, status: DeliveryStatus) -> None:
        self.produce(Record.of(self._names.status, status.recipient, status))

    def dead_letter(self, message: Any, error: BaseException, stage: DeadLetterStage) -> None:
        """Park a message that cannot be processed on the DLQ, with the reason, and count it."""
        record = dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            error=error,
            stage=stage,
            max_original_bytes=original_room(self._max_record_bytes),
        )
        # Within the budget by construction (original and key cut to fit), so this produce never refuses.
        key = None if message.key is None else message.key[:MAX_KEY_BYTES]
        self.produce(Record(self._names.dlq, key, record.to_json()))
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
        """Produce what was taken and wait until everything handed over so far is on the broker; raise if any
        of it failed."""
        # Both taken before the first await: a concurrent caller's flush waits for its own records only.
        records, self._records = self._records, []
        changelog, self._changelog = self._changelog, []
        if not records and not changelog:
            return
        acknowledged = await asyncio.gather(*await self._publish([*records, *changelog]))
        if changelog:
            self._persisted(acknowledged)

    def _persisted(self, acknowledged: Sequence[Any]) -> None:
        """Note, once per changelog partition, the last offset a table's writes reached."""
        tables = {topic: cast(TableName, table) for table, topic in self._names.changelogs.items()}
        last: dict[TP, int] = {}
        for metadata in acknowledged:
            if metadata is not None and metadata.topic in tables:  # None: a test's producer, or acks=0
                tp = TP(metadata.topic, metadata.partition)
                last[tp] = max(metadata.offset, last.get(tp, -1))
        for tp, offset in last.items():
            persist_offset(self._tables.by_name(tables[tp.topic]).faust, tp, offset)


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
