"""Table recovery that bulk-loads the assigned changelog partitions before Faust's per-record path reads what
is left: Faust's recovery hands each changelog record through its fetcher, conductor, a queue and a
bookkeeping pass of its own (a few thousand records a second), where a plain consumer and a store write per
fetched run read tens of thousands (bench/RESULTS.md, issue 16).

Faust stays in charge of the rest. Once it knows each active partition's end (its highwater) and where
reading starts (the offsets the stores persisted, or the log's start), `BulkRecovery` reads every partition
from there to the end with adapters.broker.changelog_reader, writes each run into the table's store
(streams.runtime.changelog_writers) and moves Faust's offset for the partition to the run's last record, in
one step with nothing awaited between: so Faust's offsets (and, on RocksDB, the persisted ones) always say
what the store holds, /readyz reports the progress from them as before, and whatever stops the load (a new
rebalance, a stop, a stalled broker) leaves Faust's own path to read on from where it got."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Container, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any, Protocol

from aiokafka.structs import TopicPartition
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from adapters.broker.changelog_reader import ChangelogReader, Span
from streams.runtime.changelog_writers import ChangelogWriter, writer_for

log = logging.getLogger(__name__)

# Below this many records in all, Faust's own path takes about as long as starting a consumer.
MIN_RECORDS = 1_000


def span_to_read(offset: int | None, highwater: int | None) -> Span | None:
    """What is left to read of a partition in Faust's conventions (faust/tables/recovery.py): `offset` is the
    last record applied (-1: none; None: not known yet), `highwater` the partition's last offset (-1: empty;
    None: not known yet). None when there is nothing to read or it cannot be told."""
    if offset is None or highwater is None:
        return None
    span = Span(start=max(offset, -1) + 1, end=highwater + 1)
    return None if span.empty else span


def plan_spans(
    tps: Iterable[TP],
    offsets: Mapping[TP, int | None],
    highwaters: Mapping[TP, int | None],
    min_records: int = MIN_RECORDS,
) -> dict[TP, Span]:
    """The spans worth a bulk load: every partition with records to read, or none if they add up to fewer
    than `min_records`."""
    spans = {}
    for tp in tps:
        span = span_to_read(offsets.get(tp), highwaters.get(tp))
        if span is not None:
            spans[tp] = span
    if sum(span.end - span.start for span in spans.values()) < min_records:
        return {}
    return spans


class BulkRecovery(Recovery):
    """Faust's Recovery with a bulk load of the active changelog partitions as a step of its own, between
    building the active offsets and seeking to them."""

    min_records: int = MIN_RECORDS
    reader: Callable[[list[str], Mapping[TopicPartition, Span]], Any] = ChangelogReader
    _bulk_due: tuple[frozenset[TP], MutableMapping[TP, Any]] | None = None

    async def _build_offsets(self, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        await super()._build_offsets(consumer, tps, destination, title)
        if title == "active":
            self._bulk_due = (frozenset(tps), destination)

    # Faust's signature, timeout included.
    async def _wait(self, coro: Any, timeout: Any = None) -> None:  # noqa: ASYNC109
        # Faust runs each recovery step under `_wait`: a new rebalance or a stop ends the step
        # (RebalanceAgain, ServiceStopped). Its timeout (broker_request_timeout, 90 s) suits one broker
        # request, not reading whole changelogs, and running out of it stops Faust's recovery for good; so
        # the load is a step of its own with no timeout, bounded instead by the reader's stall limit.
        try:
            await super()._wait(coro, timeout=timeout)
        finally:
            due, self._bulk_due = self._bulk_due, None
        if due is not None:
            await super()._wait(self._bulk_load(*due))

    async def _bulk_load(self, tps: frozenset[TP], offsets: MutableMapping[TP, Any]) -> None:
        if self.app.in_transaction:
            return  # exactly-once: changelogs may hold aborted records, which only Faust's consumer skips
        # Anything Faust buffered goes into the stores first: what is read next lands on top of it.
        self.flush_buffers()
        writers: dict[Any, ChangelogWriter | None] = {}
        spans: dict[TopicPartition, Span] = {}
        targets: dict[TopicPartition, tuple[TP, ChangelogWriter]] = {}
        for tp, span in plan_spans(tps, offsets, self.active_highwaters, self.min_records).items():
            table = self.tp_to_table.get(tp)
            if table not in writers:
                writers[table] = writer_for(table) if table is not None else None
            writer = writers[table]
            if writer is not None:
                spans[TopicPartition(tp.topic, tp.partition)] = span
                targets[TopicPartition(tp.topic, tp.partition)] = (tp, writer)
        if not spans:
            return
        generation = self.app.consumer_generation_id

        def current() -> bool:
            return self.app.consumer_generation_id == generation and not self.signal_recovery_start.is_set()

        def ran(tp: TP) -> None:
            now = monotonic()
            # Faust's stats timer warns of partitions that seem to get no records.
            self._active_events_received_at[tp] = now
            self._last_flush_at = now

        bootstrap = faust_aiokafka.server_list(self.app.transport.url, faust_aiokafka.Transport.default_port)
        started, progress = monotonic(), Progress()
        try:
            async with self.reader(bootstrap, spans) as reader:
                await apply_runs(
                    reader, targets, offsets, progress, current=current, active=self.active_tps, on_run=ran
                )
        except Exception as exc:
            # Faust's path reads on from the offsets the load reached.
            log.warning(
                "bulk table recovery stopped early",
                extra={"reason": f"{type(exc).__name__}: {exc}", "records": progress.records},
            )
        finally:
            seconds = monotonic() - started
            log.info(
                "bulk table recovery",
                extra={
                    "records": progress.records,
                    "partitions": len(spans),
                    "seconds": round(seconds, 3),
                    "records_per_second": round(progress.records / seconds) if seconds > 0 else None,
                },
            )


class RunSource(Protocol):
    """What `apply_runs` reads from (adapters.broker.changelog_reader.ChangelogReader)."""

    def runs(self) -> AsyncIterator[tuple[TopicPartition, Sequence[Any]]]: ...

    def drop(self, tp: TopicPartition) -> None: ...


@dataclass
class Progress:
    records: int = 0


async def apply_runs(
    reader: RunSource,
    targets: Mapping[TopicPartition, tuple[TP, ChangelogWriter]],
    offsets: MutableMapping[TP, Any],
    progress: Progress,
    *,
    current: Callable[[], bool],
    active: Container[TP],
    on_run: Callable[[TP], None] = lambda tp: None,
) -> None:
    """Write each run the reader yields into its partition's store and move Faust's offset for the partition
    to the run's last record, with nothing awaited between the two. Stops when `current()` turns false (a new
    rebalance: this assignment is stale). Leaves a partition to Faust's path, reading no more of it, when it
    is no longer `active`, its store is not held here, or its offset moved otherwise than by this load
    (Faust's path took it over)."""
    expected = {tp: offsets.get(tp) for tp, _ in targets.values()}
    async for aiotp, run in reader.runs():
        if not current():
            return
        tp, writer = targets[aiotp]
        if tp not in active or offsets.get(tp) != expected[tp] or not writer.write(tp.partition, run):
            reader.drop(aiotp)
            continue
        offsets[tp] = expected[tp] = run[-1].offset
        progress.records += len(run)
        on_run(tp)


# Faust's own logger names (mode names a service's logger after its module): its recovery's log lines are
# read by that name (tests/reliability/test_standby_failover.py, and operators' filters).
BulkRecovery.logger = Recovery.logger


class BulkRecoveryTableManager(TableManager):
    """Faust's table manager with the bulk-loading recovery (the app's `TableManager` setting)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = BulkRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


BulkRecoveryTableManager.logger = TableManager.logger
