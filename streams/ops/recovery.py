"""Table recovery progress (changelog records read and left, per table) computed from Faust's recovery state,
for /readyz and the `herald_table_recovery_*` metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

RECORDS_LEFT = "herald_table_recovery_records_left"
RECORDS_READ = "herald_table_recovery_records_total"
STANDBY_LEFT = "herald_table_standby_records_left"

P = TypeVar("P", bound=Hashable)  # a changelog partition (Faust's TP)


@dataclass(frozen=True, slots=True)
class TableProgress:
    records_read: int = 0
    records_left: int = 0
    partitions_left: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "records_read": self.records_read,
            "records_left": self.records_left,
            "partitions_left": self.partitions_left,
        }


@dataclass(frozen=True, slots=True)
class RecoveryProgress:
    """Totals over this worker's active changelog partitions, and the same per table (counts only: never a
    key or a value)."""

    records_read: int = 0
    records_left: int = 0
    partitions_left: int = 0
    tables: Mapping[str, TableProgress] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            **TableProgress(self.records_read, self.records_left, self.partitions_left).as_json(),
            "tables": {name: table.as_json() for name, table in sorted(self.tables.items())},
        }


def recovery_progress(
    highwaters: Mapping[P, int | None],
    offsets: Mapping[P, int | None],
    starts: Mapping[P, int | None],
    table_of: Callable[[P], str],
) -> RecoveryProgress:
    """Progress from Faust's own numbers, per partition of `highwaters`.

    Faust's conventions (faust/tables/recovery.py): a highwater is the offset of the partition's last record
    (-1: empty; None or missing: not read from the broker yet, and the partition is left out); an offset is
    that of the last record applied (-1 or None: none yet); Faust's records left are `highwater - offset`.
    `starts` holds the offset each partition's recovery began at (missing or None: -1, the log's start).
    An offset past the highwater leaves nothing to read and counts as read up to the highwater only.
    """
    read: dict[str, int] = {}
    left: dict[str, int] = {}
    pending: dict[str, int] = {}
    for partition, highwater in highwaters.items():
        if highwater is None:
            continue
        partition_read, partition_left = partition_progress(
            highwater, offsets.get(partition), starts.get(partition)
        )
        table = table_of(partition)
        read[table] = read.get(table, 0) + partition_read
        left[table] = left.get(table, 0) + partition_left
        pending[table] = pending.get(table, 0) + (1 if partition_left else 0)
    tables = {name: TableProgress(read[name], left[name], pending[name]) for name in read}
    return RecoveryProgress(
        records_read=sum(read.values()),
        records_left=sum(left.values()),
        partitions_left=sum(pending.values()),
        tables=tables,
    )


def partition_progress(highwater: int, offset: int | None, start: int | None) -> tuple[int, int]:
    """(records read, records left) of one partition, in `recovery_progress`'s conventions."""
    offset, start = _at_least_minus_one(offset), _at_least_minus_one(start)
    return max(min(offset, highwater) - start, 0), max(highwater - offset, 0)


def standby_records_left(
    highwaters: Mapping[P, int | None], offsets: Mapping[P, int | None], table_of: Callable[[P], str]
) -> dict[str, int]:
    """Changelog records this worker's standby partitions have still to apply, per table, in
    `recovery_progress`'s conventions (a partition whose highwater is unknown is left out)."""
    progress = recovery_progress(highwaters, offsets, {}, table_of)
    return {name: table.records_left for name, table in progress.tables.items()}


def _at_least_minus_one(offset: int | None) -> int:
    return -1 if offset is None else max(offset, -1)


class RecoveryWatch:
    """Reads `app.tables.recovery` when sampled (by /readyz, and by a timer of the ops server) and keeps what
    Faust does not: the offset each active partition's recovery began at, so that records read can be told.

    Faust forgets where a recovery began once it reads; the watch notes each partition's offset the first
    time it samples it in a recovery, so a partition that was already being read then counts as read only
    from there (never more than it read). Metrics, when a registry is given: records left per table (a gauge,
    0 when not recovering), records read while recovering (a counter, from the same samples), and what the
    standby partitions have still to apply (a gauge: what a takeover of them would read first)."""

    def __init__(self, faust_app: Any, registry: CollectorRegistry | None = None) -> None:
        self._app = faust_app
        self._starts: dict[Any, int] = {}
        self._counted: dict[Any, int] = {}  # records read per partition, as already added to the counter
        self._tables_seen: set[str] = set()
        self._left: Gauge | None = None
        self._read: Counter | None = None
        self._standby_left: Gauge | None = None
        if registry is not None:
            self._standby_left = Gauge(
                STANDBY_LEFT,
                "Changelog records this worker's standby copies of other workers' table partitions have "
                "still to apply, by table: what taking over those partitions would read first",
                ["table"],
                registry=registry,
            )
            self._left = Gauge(
                RECORDS_LEFT,
                "Changelog records this worker has still to read before its tables are recovered, by table",
                ["table"],
                registry=registry,
            )
            self._read = Counter(
                RECORDS_READ,
                "Changelog records read while recovering tables, by table (sampled, not counted per record)",
                ["table"],
                registry=registry,
            )

    def _recovery(self) -> Any | None:
        """Faust's recovery service, or None before the app has one."""
        try:
            return self._app.tables.recovery
        except Exception:  # a stand-in app, or Faust's tables not set up yet
            return None

    def recovering(self) -> bool:
        """Reading changelogs now (Faust's `in_recovery`), or not recovered yet since the worker started."""
        recovery = self._recovery()
        if recovery is None:
            return False
        return bool(recovery.in_recovery) or not recovery.completed.is_set()

    def in_recovery(self) -> bool:
        recovery = self._recovery()
        return recovery is not None and bool(recovery.in_recovery)

    def sample(self) -> RecoveryProgress | None:
        """The progress now, or None when the worker is not recovering; updates the metrics either way."""
        recovery = self._recovery()
        if recovery is None:
            return None
        self._export_standbys(recovery)
        if not self.recovering():
            if self._starts:  # the reads since the last sample, up to the end of the recovery
                self._count(recovery, self._starts.keys())
            self._starts.clear()
            self._counted.clear()
            self._export(RecoveryProgress(), ())
            return None
        active = set(recovery.active_tps)
        highwaters = {tp: recovery.active_highwaters.get(tp) for tp in active}
        highwaters = {tp: hw for tp, hw in highwaters.items() if hw is not None}
        offsets = {tp: recovery.active_offsets.get(tp) for tp in active}
        for tp in [tp for tp in self._starts if tp not in highwaters]:
            del self._starts[tp]
            self._counted.pop(tp, None)
        for tp in highwaters:
            if tp not in self._starts and offsets[tp] is not None:
                self._starts[tp] = offsets[tp]
        progress = recovery_progress(highwaters, offsets, self._starts, _table_of(recovery))
        self._count(recovery, self._starts.keys())
        self._export(progress, progress.tables)
        return progress

    def _count(self, recovery: Any, partitions: Iterable[Any]) -> None:
        """Add to the counter what each partition read since the last sample."""
        if self._read is None:
            return
        table_of = _table_of(recovery)
        for tp in partitions:
            highwater = recovery.active_highwaters.get(tp)
            if highwater is None:
                continue
            read, _ = partition_progress(highwater, recovery.active_offsets.get(tp), self._starts.get(tp))
            delta = read - self._counted.get(tp, 0)
            if delta > 0:
                self._read.labels(table_of(tp)).inc(delta)
                self._counted[tp] = read

    def _export(self, progress: RecoveryProgress, tables: Iterable[str]) -> None:
        if self._left is None:
            return
        self._tables_seen.update(tables)
        with contextlib.suppress(Exception):  # the tables Faust knows, so that each series starts at 0
            self._tables_seen.update(str(table.name) for table in self._app.tables.values())
        for name in self._tables_seen:
            table = progress.tables.get(name)
            self._left.labels(name).set(table.records_left if table else 0)
            if self._read is not None:
                self._read.labels(name)

    def _export_standbys(self, recovery: Any) -> None:
        if self._standby_left is None:
            return
        with contextlib.suppress(Exception):  # a consumer not started yet: no figure this time
            standbys = set(recovery.standby_tps)
            highwaters = {tp: self._standby_highwater(recovery, tp) for tp in standbys}
            offsets = {tp: recovery.standby_offsets.get(tp) for tp in standbys}
            left = standby_records_left(highwaters, offsets, _table_of(recovery))
            names = {str(table.name) for table in self._app.tables.values()} | set(left)
            for name in names:
                self._standby_left.labels(name).set(left.get(name, 0))

    def _standby_highwater(self, recovery: Any, tp: Any) -> int | None:
        """The offset of the partition's last record: from the consumer's latest fetch of it (the broker's
        high watermark, minus one as Faust counts), else what Faust read when its recovery began."""
        try:
            live = self._app.consumer.highwater(tp)
        except Exception:  # aiokafka asserts the partition is assigned: a rebalance under way
            live = None
        if live is not None:
            return int(live) - 1
        recorded = recovery.standby_highwaters.get(tp)
        return None if recorded is None else int(recorded)


def _table_of(recovery: Any) -> Callable[[Any], str]:
    tables = recovery.tp_to_table

    def table_of(tp: Any) -> str:
        return str(tables[tp].name)

    return table_of
