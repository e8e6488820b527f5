"""The bulk table recovery's own logic, without a broker: what it plans to read in Faust's offset conventions,
how runs land in each store (latest value wins, tombstones delete, RocksDB's offset in the same batch), and
how the load hands partitions back to Faust's path (streams.runtime.bulk_recovery,
streams.runtime.changelog_writers, adapters.broker.changelog_reader)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.structs import TopicPartition
from faust.types import TP
from rocksdict import Options, Rdict

from adapters.broker.changelog_reader import Span, within
from streams.runtime.bulk_recovery import Progress, apply_runs, plan_spans, span_to_read
from streams.runtime.changelog_writers import MemoryWriter, RocksDBWriter, writer_for


@dataclass(frozen=True)
class Record:
    """What the writers read of an aiokafka ConsumerRecord."""

    offset: int
    key: bytes | None
    value: bytes | None


def run(*items: tuple[int, str, Any]) -> list[Record]:
    """(offset, key, value or None for a tombstone) as JSON changelog records."""
    return [
        Record(offset, json.dumps(key).encode(), None if value is None else json.dumps(value).encode())
        for offset, key, value in items
    ]


# --- what is read -------------------------------------------------------------------------------------------


def test_spans_follow_fausts_offsets_last_applied_and_highwater_last_offset() -> None:
    assert span_to_read(-1, 9) == Span(0, 10)  # nothing applied: the whole log
    assert span_to_read(4, 9) == Span(5, 10)  # a persisted offset: the records after it
    assert span_to_read(9, 9) is None  # read to the end
    assert span_to_read(12, 9) is None  # past the end (the store is ahead of the log)
    assert span_to_read(-1, -1) is None  # an empty partition
    assert span_to_read(None, 9) is None and span_to_read(3, None) is None  # not known yet


def test_a_load_is_planned_only_when_the_partitions_add_up_to_enough() -> None:
    a, b, c = TP("t", 0), TP("t", 1), TP("t", 2)
    offsets = {a: -1, b: 98, c: 5}
    highwaters = {a: 599, b: 599, c: 5}
    assert plan_spans([a, b, c], offsets, highwaters, min_records=1000) == {a: Span(0, 600), b: Span(99, 600)}
    assert plan_spans([a, b, c], offsets, highwaters, min_records=1200) == {}


def test_records_past_a_spans_end_are_left_out() -> None:
    records = run((3, "a", 1), (4, "b", 2), (5, "c", 3))
    assert [r.offset for r in within(records, 5)] == [3, 4]
    assert within(records, 6) is records


# --- how runs land in the stores ----------------------------------------------------------------------------


def test_memory_the_latest_record_of_each_key_wins_and_a_tombstone_deletes() -> None:
    store = type("Store", (), {"data": {"old": 1}, "_key_partition": {"old": 2}})()
    writer = MemoryWriter(store, lambda raw: json.loads(raw) if raw else None, json.loads)
    assert writer.write(2, run((0, "a", {"v": 1}), (1, "b", {"v": 1}), (2, "a", {"v": 2}), (3, "b", None)))
    assert writer.write(2, run((4, "c", None), (5, "old", None), (6, "c", {"v": 3})))
    assert store.data == {"a": {"v": 2}, "c": {"v": 3}}
    assert store._key_partition == {"a": 2, "c": 2}  # Faust drops the keys of unassigned partitions by it


def test_rocksdb_a_run_is_one_batch_with_the_partitions_offset(tmp_path: Path) -> None:
    db = Rdict(str(tmp_path / "p1"), Options(raw_mode=True))
    db[b'"gone"'] = b"1"
    store = type("Store", (), {"_dbs": {1: db}, "offset_key": b"__faust\0offset__"})()
    writer = RocksDBWriter(store)
    records = run((7, "a", {"v": 1}), (8, "gone", None), (9, "a", {"v": 2}), (10, "b", {"v": 1}))
    assert writer.write(1, records)
    assert db[b'"a"'] == b'{"v": 2}' and db[b'"b"'] == b'{"v": 1}'
    assert db.get(b'"gone"') is None
    assert db[b"__faust\0offset__"] == b"10"  # as Faust's set_persisted_offset writes it
    assert not writer.write(3, records)  # a partition whose store is not open here is not opened
    db.close()


def json_table(app: faust.App, name: str, **options: Any) -> Any:
    """A table on a JSON changelog, as streams.runtime.tables declares Herald's."""
    changelog = app.topic(f"{name}-changelog", key_serializer="json", value_serializer="json", internal=True)
    return app.Table(name, default=None, changelog_topic=changelog, **options)


def test_writers_only_for_plain_tables_on_the_memory_or_rocksdb_store() -> None:
    app = faust.App("bulk-unit", autodiscover=False, store="memory://")
    assert isinstance(writer_for(json_table(app, "plain")), MemoryWriter)

    async def on_event(event: Any) -> None: ...

    called = json_table(app, "called", on_changelog_event=on_event)
    assert writer_for(called) is None  # Faust calls it per record: its own path only
    assert writer_for(app.GlobalTable("everywhere", default=None)) is None


def test_memory_writer_decodes_as_faust_does() -> None:
    app = faust.App("bulk-decode", autodiscover=False, store="memory://")
    table = json_table(app, "decoded")
    writer = writer_for(table)
    assert writer is not None
    values: list[Any] = [{"a": [1, 2], "b": None}, [1, "x"], "text", 3.5, 0, {}]
    records = [Record(i, json.dumps(["k", i]).encode(), json.dumps(v).encode()) for i, v in enumerate(values)]
    writer.write(0, records)
    serializers = app.serializers
    expected = {
        table._to_key(serializers.loads_key(None, r.key, serializer="json")): serializers.loads_value(
            None, r.value, serializer="json"
        )
        for r in records
    }
    assert dict(table.data.data) == expected
    assert ("k", 0) in table.data.data  # a list key comes back a tuple, as Faust's memory store keeps it


# --- the load, and where it leaves partitions to Faust's path ----------------------------------------------


class FakeReader:
    def __init__(
        self, runs: Sequence[tuple[TopicPartition, list[Record]]], fail_after: int | None = None
    ) -> None:
        self._runs = runs
        self._fail_after = fail_after
        self.dropped: list[TopicPartition] = []

    async def runs(self) -> AsyncIterator[tuple[TopicPartition, Sequence[Any]]]:
        for index, (tp, records) in enumerate(self._runs):
            if self._fail_after is not None and index >= self._fail_after:
                raise ConnectionError("broker gone")
            if tp not in self.dropped:
                yield tp, records

    def drop(self, tp: TopicPartition) -> None:
        self.dropped.append(tp)


class RecordingWriter:
    def __init__(self, held: bool = True) -> None:
        self.held = held
        self.written: list[tuple[int, list[int]]] = []

    def write(self, partition: int, records: Sequence[Any]) -> bool:
        if self.held:
            self.written.append((partition, [r.offset for r in records]))
        return self.held


A, B = TP("users-changelog", 0), TP("users-changelog", 1)
AIO_A, AIO_B = TopicPartition(*A), TopicPartition(*B)


async def test_each_run_moves_fausts_offset_to_its_last_record() -> None:
    writer = RecordingWriter()
    offsets: Counter[TP] = Counter({A: -1, B: 4})
    reader = FakeReader(
        [(AIO_A, run((0, "a", 1), (1, "b", 1))), (AIO_B, run((5, "c", 1))), (AIO_A, run((2, "a", 2)))]
    )
    progress = Progress()
    seen: list[TP] = []
    targets = {AIO_A: (A, writer), AIO_B: (B, writer)}
    await apply_runs(
        reader, targets, offsets, progress, current=lambda: True, active={A, B}, on_run=seen.append
    )
    assert offsets == {A: 2, B: 5}
    assert writer.written == [(0, [0, 1]), (1, [5]), (0, [2])]
    assert progress.records == 4 and seen == [A, B, A]


async def test_a_partition_whose_offset_faust_moved_is_left_to_faust() -> None:
    writer = RecordingWriter()
    offsets: Counter[TP] = Counter({A: -1, B: -1})
    reader = FakeReader([(AIO_A, run((0, "a", 1))), (AIO_B, run((0, "b", 1))), (AIO_A, run((1, "a", 2)))])
    targets = {AIO_A: (A, writer), AIO_B: (B, writer)}

    def faust_takes_a(tp: TP) -> None:
        if tp == A:
            offsets[A] = 7  # Faust's path applied (buffered) a record of A meanwhile

    await apply_runs(
        reader, targets, offsets, Progress(), current=lambda: True, active={A, B}, on_run=faust_takes_a
    )
    assert offsets == {A: 7, B: 0}
    assert writer.written == [(0, [0]), (1, [0])]  # nothing of A after Faust moved it
    assert reader.dropped == [AIO_A]


async def test_a_new_rebalance_stops_the_load_and_a_revoked_or_unheld_partition_is_dropped() -> None:
    offsets: Counter[TP] = Counter({A: -1, B: -1})
    unheld = RecordingWriter(held=False)
    reader = FakeReader([(AIO_A, run((0, "a", 1))), (AIO_B, run((0, "b", 1)))])
    await apply_runs(
        reader,
        {AIO_A: (A, RecordingWriter()), AIO_B: (B, unheld)},
        offsets,
        Progress(),
        current=lambda: True,
        active={A, B},
    )
    assert offsets == {A: 0, B: -1} and reader.dropped == [AIO_B]  # B's store is not open here

    reader = FakeReader([(AIO_A, run((1, "a", 1))), (AIO_B, run((0, "b", 1)))])
    writer = RecordingWriter()
    await apply_runs(
        reader,
        {AIO_A: (A, writer), AIO_B: (B, writer)},
        offsets,
        Progress(),
        current=lambda: True,
        active={B},
    )
    assert offsets == {A: 0, B: 0} and reader.dropped == [AIO_A]  # A was revoked

    reader = FakeReader([(AIO_A, run((1, "a", 1)))])
    await apply_runs(reader, {AIO_A: (A, writer)}, offsets, Progress(), current=lambda: False, active={A})
    assert offsets[A] == 0  # rebalancing again: nothing more written


async def test_a_failing_reader_leaves_the_offsets_at_what_was_written() -> None:
    writer = RecordingWriter()
    offsets: Counter[TP] = Counter({A: -1})
    reader = FakeReader([(AIO_A, run((0, "a", 1))), (AIO_A, run((1, "a", 2)))], fail_after=1)
    progress = Progress()
    with pytest.raises(ConnectionError):
        await apply_runs(reader, {AIO_A: (A, writer)}, offsets, progress, current=lambda: True, active={A})
    assert offsets[A] == 0 and progress.records == 1  # Faust's path reads on from offset 1
