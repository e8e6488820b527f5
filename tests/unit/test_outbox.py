"""The outbox: a batch whose records the broker did not take runs again and never leaves the agent; a step's
effects are applied in order, table writes first, to the input's partition."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from kernel.errors import UnknownUser
from kernel.settings import Settings
from kernel.topics import TopicNames
from schemas.channels import Channel
from schemas.deadletter import DeadLetter
from schemas.scheduled import Scheduled
from schemas.status import DeliveryStatus, Outcome
from streams.effects import Effects, Later, Record, Rejected, TableWrite
from streams.ops.metrics import WorkerMetrics
from streams.runtime import outbox as outbox_module
from streams.runtime.outbox import Outbox, Settler
from streams.runtime.tables import StateTable, Tables

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NAMES = TopicNames.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]


class FlakyProducer:
    """Takes records, but the broker refuses the first `failures` of them."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.taken: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None, *_: Any
    ) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            done.set_exception(RuntimeError("broker refused the record"))
        else:
            self.taken.append((topic, key, value, partition))
            done.set_result(None)
        return done


class RecordingTable:
    """A Faust table's surface the outbox uses: `data` and `send_changelog`."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.data: dict[str, Any] = {}
        self.log = log

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def __len__(self) -> int:
        return len(self.data)

    def send_changelog(
        self, partition: int, key: str, value: Any, value_serializer: str | None = None
    ) -> asyncio.Future[None]:
        # A delete must reach the changelog as a tombstone: no value, not the json codec's `null`.
        self.log.append(
            ("changelog", (partition, key, value if value_serializer is None else (value_serializer, value)))
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def make_outbox(
    producer: FlakyProducer, log: list[tuple[str, Any]] | None = None
) -> tuple[Outbox, Tables, CollectorRegistry]:
    registry = CollectorRegistry()
    log = log if log is not None else []
    tables = Tables(*(StateTable(RecordingTable(log)) for _ in range(5)))  # type: ignore[arg-type]
    app = cast(Any, SimpleNamespace(producer=producer))
    return Outbox(app, NAMES, tables, WorkerMetrics(registry, "test"), lambda: NOW), tables, registry


def settler(producer: FlakyProducer) -> tuple[Settler, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, "test")
    tables = Tables(*(StateTable(RecordingTable([])) for _ in range(5)))  # type: ignore[arg-type]
    app = cast(Any, SimpleNamespace(producer=producer))
    return Settler(lambda: Outbox(app, NAMES, tables, metrics, lambda: NOW), metrics), registry


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "SETTLE_FIRST_DELAY_SECONDS", 0.0)


async def test_a_refused_batch_runs_again_until_the_broker_takes_it() -> None:
    producer = FlakyProducer(failures=3)  # run 1: both refused; run 2: the first; run 3: none
    settle, registry = settler(producer)
    runs = 0

    async def work(outbox: Outbox) -> None:
        nonlocal runs
        runs += 1
        await outbox.produce(Record("herald.routed", b"alice", b"record-1"))
        await outbox.produce(Record("herald.routed", b"bob", b"record-2"))

    await settle.settle("route", work)
    assert runs == 3
    # At least once: run 2's record-2 went through and is sent again by run 3.
    assert [value for *_, value, _ in producer.taken] == [b"record-2", b"record-1", b"record-2"]
    assert registry.get_sample_value("herald_batch_failures_total", {"agent": "route"}) == 2


async def test_a_batch_that_goes_through_runs_once() -> None:
    producer = FlakyProducer(failures=0)
    settle, registry = settler(producer)

    async def work(outbox: Outbox) -> None:
        await outbox.produce(Record("herald.events", None, b"x"))

    await settle.settle("intake", work)
    assert [value for *_, value, _ in producer.taken] == [b"x"]
    assert registry.get_sample_value("herald_batch_failures_total", {"agent": "intake"}) is None


async def test_cancellation_is_not_retried() -> None:
    settle, _ = settler(FlakyProducer())

    async def work(outbox: Outbox) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await settle.settle("route", work)


class Event:
    """A Faust event's surface: its message (and weak-referenceable, as Faust's current event must be)."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(
            topic="herald.routed", partition=partition, offset=41, key=b"ada", value=b"{raw}", timestamp=0.0
        )


def _event(partition: int = 3) -> Any:
    return Event(partition)


async def test_effects_are_applied_table_writes_first_to_the_inputs_partition() -> None:
    producer = FlakyProducer()
    log: list[tuple[str, Any]] = []
    outbox, tables, registry = make_outbox(producer, log)
    status = DeliveryStatus(
        notification_id="n1",
        event_id="e1",
        recipient="ada",
        channel=Channel.EMAIL,
        provider="-",
        outcome=Outcome.SKIPPED,
        attempt=1,
        at=NOW,
        reason="opted_out",
    )
    effects = Effects(
        records=[Record("herald.deliver.email", b"ada", b"mail")],
        later=[
            Later(NOW + timedelta(seconds=40), Record("herald.deliver.push", b"ada", b"push"), "quiet_hours")
        ],
        statuses=[status],
        rejected=[Rejected(UnknownUser("no profile"), "route")],
        writes=[TableWrite("throttles", "ada", {"channel:email": [1.0]}), TableWrite("digests", "ada", None)],
    )
    await outbox.apply(_event(partition=3), effects)
    await outbox.flush()

    assert log == [
        ("changelog", (3, "ada", {"channel:email": [1.0]})),
        ("changelog", (3, "ada", ("raw", None))),
    ]
    assert tables.throttles.get("ada") == {"channel:email": [1.0]}
    topics = [topic for topic, *_ in producer.taken]
    assert topics == ["herald.deliver.email", "herald.scheduled.30s", NAMES.status, NAMES.dlq]
    held = Scheduled.model_validate_json(producer.taken[1][2] or b"")
    assert (held.target, held.reason) == ("herald.deliver.push", "quiet_hours")
    letter = DeadLetter.model_validate_json(producer.taken[3][2] or b"")
    assert (letter.reason, letter.stage, letter.offset) == ("unknown_user", "route", 41)
    assert (
        registry.get_sample_value("herald_dead_letters_total", {"stage": "route", "reason": "unknown_user"})
        == 1
    )
    assert registry.get_sample_value("herald_scheduled_total", {"reason": "quiet_hours"}) == 1
