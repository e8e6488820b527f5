"""Table recovery progress: the numbers from Faust's offsets and highwaters, the watch that samples them
(start offsets, metrics), and /readyz while a worker recovers. Faust's recovery service is a stand-in."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import httpx
from prometheus_client import CollectorRegistry

from adapters.http.read_limits import ReadLimits
from streams.ops.recovery import (
    RECORDS_LEFT,
    RECORDS_READ,
    STANDBY_LEFT,
    RecoveryProgress,
    TableProgress,
    partition_progress,
    recovery_progress,
    standby_records_left,
)
from streams.ops.recovery import RecoveryWatch as Watch
from streams.ops.server import create_ops_app, readiness
from streams.ops.services import OpsServer


def by_topic(tp: tuple[str, int]) -> str:
    return tp[0]


# --- the numbers ----------------------------------------------------------------------------------------


def test_records_left_are_highwater_minus_offset_and_read_are_offset_minus_start() -> None:
    progress = recovery_progress(
        highwaters={("users", 0): 99, ("users", 1): 49, ("preferences", 0): 9},
        offsets={("users", 0): 39, ("users", 1): 49, ("preferences", 0): -1},
        starts={("users", 0): 19, ("users", 1): -1, ("preferences", 0): -1},
        table_of=by_topic,
    )
    assert progress == RecoveryProgress(
        records_read=20 + 50 + 0,
        records_left=60 + 0 + 10,
        partitions_left=2,
        tables={"users": TableProgress(70, 60, 1), "preferences": TableProgress(0, 10, 1)},
    )
    assert progress.as_json() == {
        "records_read": 70,
        "records_left": 70,
        "partitions_left": 2,
        "tables": {
            "preferences": {"records_read": 0, "records_left": 10, "partitions_left": 1},
            "users": {"records_read": 70, "records_left": 60, "partitions_left": 1},
        },
    }


def test_no_offset_yet_means_nothing_read() -> None:
    # Faust's offset is -1 (None before it has built it): the whole partition, highwater + 1 records, is left.
    assert partition_progress(highwater=9, offset=None, start=None) == (0, 10)
    assert partition_progress(highwater=9, offset=-1, start=-1) == (0, 10)
    assert partition_progress(highwater=9, offset=-7, start=None) == (0, 10)


def test_highwater_zero_is_one_record_and_minus_one_an_empty_partition() -> None:
    # Faust's highwater is the offset of the last record (the broker's high watermark minus one).
    assert partition_progress(highwater=0, offset=-1, start=-1) == (0, 1)
    assert partition_progress(highwater=0, offset=0, start=-1) == (1, 0)
    assert partition_progress(highwater=-1, offset=-1, start=-1) == (0, 0)
    assert partition_progress(highwater=-1, offset=None, start=None) == (0, 0)


def test_an_offset_past_the_highwater_leaves_nothing_and_counts_only_up_to_it() -> None:
    assert partition_progress(highwater=9, offset=15, start=-1) == (10, 0)
    # A start past the highwater (a store's persisted offset ahead of the changelog): nothing read or left.
    assert partition_progress(highwater=9, offset=15, start=12) == (0, 0)


def test_a_partition_whose_highwater_is_unknown_is_left_out() -> None:
    progress = recovery_progress(
        highwaters={("users", 0): None, ("users", 1): 4},
        offsets={("users", 0): 3},
        starts={},
        table_of=by_topic,
    )
    assert progress == RecoveryProgress(0, 5, 1, {"users": TableProgress(0, 5, 1)})


def test_nothing_to_recover() -> None:
    assert recovery_progress({}, {}, {}, by_topic) == RecoveryProgress()
    assert RecoveryProgress().as_json() == {
        "records_read": 0,
        "records_left": 0,
        "partitions_left": 0,
        "tables": {},
    }


# --- the watch ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass(frozen=True)
class Table:
    name: str


class Completed:
    def __init__(self) -> None:
        self.done = False

    def is_set(self) -> bool:
        return self.done


@dataclass
class Recovery:
    """The parts of faust.tables.recovery.Recovery the watch reads, with Faust's Counter maps."""

    in_recovery: bool = False
    completed: Completed = field(default_factory=Completed)
    active_tps: set[TP] = field(default_factory=set)
    active_highwaters: Counter[TP] = field(default_factory=Counter)
    active_offsets: Counter[TP] = field(default_factory=Counter)
    standby_tps: set[TP] = field(default_factory=set)
    standby_highwaters: Counter[TP] = field(default_factory=Counter)
    standby_offsets: Counter[TP] = field(default_factory=Counter)
    tp_to_table: dict[TP, Table] = field(default_factory=dict)


class Tables(dict[str, Table]):
    def __init__(self, recovery: Recovery) -> None:
        super().__init__(users=Table("users"), preferences=Table("preferences"))
        self.recovery = recovery


class Consumer:
    def __init__(self, assigned: set[TP]) -> None:
        self.assigned = assigned
        self.highwaters: dict[TP, int | None] = {}  # the broker's high watermark, as aiokafka last fetched it

    def assignment(self) -> set[TP]:
        return self.assigned

    def highwater(self, tp: TP) -> int | None:
        assert tp in self.assigned, "Partition is not assigned"  # as aiokafka's
        return self.highwaters.get(tp)


class App:
    def __init__(self) -> None:
        self.recovery = Recovery()
        self.tables = Tables(self.recovery)
        self.rebalancing = False
        self.consumer = Consumer(set())

    def assign(self, **highwaters: int) -> list[TP]:
        """Faust's state with highwaters and offsets built, nothing read yet: one partition per table."""
        tps = []
        for n, (table, highwater) in enumerate(highwaters.items()):
            tp = TP(f"herald-{table}-changelog", n)
            self.recovery.active_tps.add(tp)
            self.recovery.tp_to_table[tp] = self.tables[table]
            self.recovery.active_highwaters[tp] = highwater
            self.recovery.active_offsets[tp] = -1
            tps.append(tp)
        self.consumer.assigned = set(tps)
        self.rebalancing = True
        self.recovery.in_recovery = True
        return tps

    def recovered(self) -> None:
        for tp, highwater in self.recovery.active_highwaters.items():
            self.recovery.active_offsets[tp] = highwater
        self.recovery.in_recovery = False
        self.recovery.completed.done = True
        self.rebalancing = False


def sample(registry: CollectorRegistry, name: str, table: str) -> float | None:
    return registry.get_sample_value(name, {"table": table})


def test_the_watch_counts_reads_from_where_each_partition_began_and_exports_them() -> None:
    app, registry = App(), CollectorRegistry()
    watch = Watch(app, registry)
    assert watch.sample() is not None  # not recovered yet, nothing assigned: zeros
    assert sample(registry, RECORDS_LEFT, "users") == 0
    users, preferences = app.assign(users=999, preferences=99)
    app.recovery.active_offsets[users] = 199  # a partition resumed at offset 199 (a persisted store)
    first = watch.sample()
    assert first is not None and first.records_read == 0
    assert first.records_left == 800 + 100 and first.partitions_left == 2

    app.recovery.active_offsets[users] = 599
    app.recovery.active_offsets[preferences] = 49
    second = watch.sample()
    assert second is not None
    assert second.tables["users"] == TableProgress(400, 400, 1)
    assert second.tables["preferences"] == TableProgress(50, 50, 1)
    assert sample(registry, RECORDS_LEFT, "users") == 400
    assert sample(registry, RECORDS_READ, "users") == 400
    assert sample(registry, RECORDS_READ, "preferences") == 50

    app.recovered()  # the last reads happen between two samples: the counter still gets them
    assert watch.sample() is None
    assert sample(registry, RECORDS_LEFT, "users") == 0
    assert sample(registry, RECORDS_READ, "users") == 800
    assert sample(registry, RECORDS_READ, "preferences") == 100


def test_a_partition_first_sampled_mid_read_counts_reads_from_there_on() -> None:
    app, registry = App(), CollectorRegistry()
    watch = Watch(app, registry)
    [users] = app.assign(users=999)
    app.recovery.active_offsets[users] = 299  # read before the watch looked: not counted, never guessed
    assert (watch.sample() or RecoveryProgress()).records_read == 0
    app.recovery.active_offsets[users] = 499
    assert (watch.sample() or RecoveryProgress()).records_read == 200
    assert sample(registry, RECORDS_READ, "users") == 200


def test_a_later_recovery_counts_again_from_its_own_start() -> None:
    app, registry = App(), CollectorRegistry()
    watch = Watch(app, registry)
    [users] = app.assign(users=99)
    watch.sample()
    app.recovered()
    watch.sample()
    assert sample(registry, RECORDS_READ, "users") == 100
    # A rebalance keeps the partition and its changelog has grown by 50: only those are read.
    app.recovery.active_highwaters[users] = 149
    app.recovery.in_recovery = app.rebalancing = True
    progress = watch.sample()
    assert progress is not None and (progress.records_read, progress.records_left) == (0, 50)
    app.recovered()
    watch.sample()
    assert sample(registry, RECORDS_READ, "users") == 150


def test_a_watch_on_an_app_not_started_reports_nothing() -> None:
    class NotStarted:
        rebalancing = False

    registry = CollectorRegistry()
    watch = Watch(NotStarted(), registry)
    assert watch.sample() is None and not watch.recovering()
    assert sample(registry, RECORDS_LEFT, "users") is None


# --- readiness ------------------------------------------------------------------------------------------


def test_readiness_says_recovering_with_progress_while_faust_reads_changelogs() -> None:
    app = App()
    watch = Watch(app)
    assert readiness(app, recovery=watch).reason == "no partitions assigned yet"
    [users] = app.assign(users=999)
    app.recovery.active_offsets[users] = 99
    state = readiness(app, recovery=watch)
    assert (state.ready, state.reason) == (False, "recovering")
    assert state.detail["recovery"]["records_left"] == 900
    assert state.detail["recovery"]["tables"]["users"]["records_left"] == 900

    # Highwaters read, reading done, Faust still seeking its streams: not in recovery, not completed.
    app.recovery.in_recovery = False
    app.rebalancing = False
    app.recovery.active_offsets[users] = 999
    state = readiness(app, recovery=watch)
    assert state.reason == "recovering" and state.detail["recovery"]["records_left"] == 0

    app.recovered()
    assert readiness(app, recovery=watch).ready
    # A later rebalance: "rebalancing" until Faust reads changelogs again.
    app.rebalancing = True
    assert readiness(app, recovery=watch).reason == "rebalancing"


async def test_readyz_answers_503_with_the_recovery_json() -> None:
    app = App()
    [users] = app.assign(users=999)
    app.recovery.active_offsets[users] = 249
    transport = httpx.ASGITransport(app=create_ops_app(app, CollectorRegistry()))
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {
            "ready": False,
            "reason": "recovering",
            "recovery": {
                "records_read": 0,  # this watch first looked at offset 249
                "records_left": 750,
                "partitions_left": 1,
                "tables": {"users": {"records_read": 0, "records_left": 750, "partitions_left": 1}},
            },
        }
        app.recovered()
        response = await client.get("/readyz")
        assert (response.status_code, response.json()) == (200, {"ready": True, "reason": "ready"})


def test_the_ops_server_exports_the_recovery_metrics() -> None:
    app, registry = App(), CollectorRegistry()
    app.assign(users=9)
    server = OpsServer(app, registry, "127.0.0.1", 0, limits=ReadLimits(1, 1, 1024))
    server.recovery.sample()
    assert sample(registry, RECORDS_LEFT, "users") == 10
    assert sample(registry, RECORDS_LEFT, "preferences") == 0
    assert sample(registry, RECORDS_READ, "users") == 0


# --- standbys -------------------------------------------------------------------------------------------


def test_standby_records_left_are_highwater_minus_offset_per_table() -> None:
    left = standby_records_left(
        highwaters={("users", 1): 99, ("users", 3): 49, ("preferences", 1): 9, ("preferences", 3): None},
        offsets={("users", 1): 39, ("users", 3): 49, ("preferences", 1): None},
        table_of=by_topic,
    )
    assert left == {"users": 60, "preferences": 10}


def test_the_watch_exports_what_the_standbys_have_left_from_the_latest_fetch() -> None:
    app, registry = App(), CollectorRegistry()
    watch = Watch(app, registry)
    app.assign(users=9)
    app.recovered()
    standby = TP("herald-users-changelog", 1)
    app.recovery.standby_tps.add(standby)
    app.recovery.tp_to_table[standby] = app.tables["users"]
    app.recovery.standby_highwaters[standby] = 499  # Faust's, read when its recovery began
    app.recovery.standby_offsets[standby] = 99
    app.consumer.assigned.add(standby)

    watch.sample()  # no fetch of the partition yet: what Faust read
    assert sample(registry, STANDBY_LEFT, "users") == 400
    assert sample(registry, STANDBY_LEFT, "preferences") == 0

    app.consumer.highwaters[standby] = 1_000  # the other worker wrote more since: offsets 500-999
    app.recovery.standby_offsets[standby] = 699
    watch.sample()
    assert sample(registry, STANDBY_LEFT, "users") == 300

    app.recovery.standby_offsets[standby] = 999  # caught up
    watch.sample()
    assert sample(registry, STANDBY_LEFT, "users") == 0

    app.consumer.assigned.discard(standby)  # mid-rebalance: aiokafka refuses; Faust's figure stands in
    app.recovery.standby_offsets[standby] = 449
    watch.sample()
    assert sample(registry, STANDBY_LEFT, "users") == 50
