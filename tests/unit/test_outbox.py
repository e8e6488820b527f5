"""The outbox: a batch whose records the broker did not take runs again and never leaves the agent; a step's
effects are applied in order, table writes first, to the input's partition."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from prometheus_client import CollectorRegistry

from kernel.errors import RecordTooLarge, UnknownUser
from kernel.settings import Settings
from kernel.topics import TopicNames
from schemas.channels import Channel
from schemas.deadletter import DeadLetter
from schemas.scheduled import Scheduled
from schemas.status import DeliveryStatus, Outcome
from streams.app import create_app
from streams.effects import Effects, Later, Record, Rejected, TableWrite
from streams.ops.metrics import WorkerMetrics
from streams.runtime import outbox as outbox_module
from streams.runtime.deadletters import MAX_ORIGINAL_BYTES
from streams.runtime.outbox import Outbox, Settler
from streams.runtime.tables import StateTable, Tables
from tests.fakes.publisher import publish_each

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NAMES = TopicNames.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
BUDGET = Settings(_env_file=None).max_record_bytes  # type: ignore[call-arg]


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
    """A Faust table's surface the outbox uses: `data`."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def __len__(self) -> int:
        return len(self.data)


def make_outbox(
    producer: FlakyProducer, max_record_bytes: int = BUDGET
) -> tuple[Outbox, Tables, CollectorRegistry]:
    registry = CollectorRegistry()
    tables = Tables(*(StateTable(RecordingTable()) for _ in range(6)))  # type: ignore[arg-type]
    app = cast(Any, SimpleNamespace(producer=producer))
    outbox = Outbox(
        publish_each(app.producer),
        NAMES,
        tables,
        WorkerMetrics(registry, "test"),
        lambda: NOW,
        max_record_bytes,
    )
    return outbox, tables, registry


def settler(producer: FlakyProducer) -> tuple[Settler, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, "test")
    tables = Tables(*(StateTable(RecordingTable()) for _ in range(6)))  # type: ignore[arg-type]
    app = cast(Any, SimpleNamespace(producer=producer))
    return Settler(
        lambda: Outbox(publish_each(app.producer), NAMES, tables, metrics, lambda: NOW, BUDGET), metrics
    ), registry


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
        outbox.produce(Record("herald.routed", b"alice", b"record-1"))
        outbox.produce(Record("herald.routed", b"bob", b"record-2"))

    await settle.settle("route", work)
    assert runs == 3
    # At least once: run 2's record-2 went through and is sent again by run 3.
    assert [value for *_, value, _ in producer.taken] == [b"record-2", b"record-1", b"record-2"]
    assert registry.get_sample_value("herald_batch_failures_total", {"agent": "route"}) == 2


async def test_a_batch_that_goes_through_runs_once() -> None:
    producer = FlakyProducer(failures=0)
    settle, registry = settler(producer)

    async def work(outbox: Outbox) -> None:
        outbox.produce(Record("herald.events", None, b"x"))

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


async def test_effects_are_applied_the_records_first_table_writes_on_the_inputs_partition() -> None:
    producer = FlakyProducer()
    outbox, tables, registry = make_outbox(producer)
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
    assert outbox.apply(_event(partition=3), effects, "route") is None
    await outbox.flush()

    assert tables.throttles.get("ada") == {"channel:email": [1.0]}
    topics = [topic for topic, *_ in producer.taken]
    assert topics[:4] == ["herald.deliver.email", "herald.scheduled.30s", NAMES.status, NAMES.dlq]
    # After the records, to the input's partition, as JSON bytes (the tables' codec), the size the budget
    # was checked against; a delete as a tombstone.
    assert producer.taken[4:] == [
        (NAMES.changelogs["throttles"], b'"ada"', b'{"channel:email":[1.0]}', 3),
        (NAMES.changelogs["digests"], b'"ada"', None, 3),
    ]
    held = Scheduled.model_validate_json(producer.taken[1][2] or b"")
    assert (held.target, held.reason) == ("herald.deliver.push", "quiet_hours")
    letter = DeadLetter.model_validate_json(producer.taken[3][2] or b"")
    assert (letter.reason, letter.stage, letter.offset) == ("unknown_user", "route", 41)
    assert (
        registry.get_sample_value("herald_dead_letters_total", {"stage": "route", "reason": "unknown_user"})
        == 1
    )
    assert registry.get_sample_value("herald_scheduled_total", {"reason": "quiet_hours"}) == 1


# --- the record budget --------------------------------------------------------------------------------------
def _status(**changes: Any) -> DeliveryStatus:
    fields: dict[str, Any] = {
        "notification_id": "n1",
        "event_id": "e1",
        "recipient": "ada",
        "channel": Channel.INAPP,
        "provider": "-",
        "outcome": Outcome.DEFERRED,
        "attempt": 1,
        "at": NOW,
        "reason": "digest",
    }
    return DeliveryStatus(**(fields | changes))


def _small() -> Effects:
    return Effects(
        records=[Record("herald.deliver.inapp", b"ada", b"ok")],
        later=[Later(NOW + timedelta(seconds=40), Record("herald.deliver.push", b"ada", b"ok"), "delay")],
        statuses=[_status()],
        rejected=[Rejected(UnknownUser("no profile"), "route.email")],
        writes=[TableWrite("throttles", "ada", {"channel:email": [1.0]})],
    )


SMALLEST = 512 * 1024  # the least HERALD_MAX_RECORD_BYTES may be
BIG = b"x" * (SMALLEST + 1)
OVER_BUDGET = {
    "a record": lambda e: e.records.append(Record("herald.deliver.inapp", b"ada", BIG)),
    # The scheduler's envelope carries the held record in base64: a third larger than the record itself.
    "a held record": lambda e: e.later.append(
        Later(NOW + timedelta(seconds=40), Record("herald.deliver.push", b"ada", BIG[:400_000]), "delay")
    ),
    "a status": lambda e: e.statuses.append(_status(provider_message_id="m" * SMALLEST)),
    "a table value": lambda e: e.writes.append(
        TableWrite("digests", "ada", {"b": {"events": ["x" * SMALLEST]}})
    ),
}


@pytest.mark.parametrize("what", OVER_BUDGET)
async def test_an_input_with_an_effect_over_the_budget_is_dead_lettered_and_nothing_else_applied(
    what: str,
) -> None:
    producer = FlakyProducer()
    outbox, tables, registry = make_outbox(producer, max_record_bytes=SMALLEST)
    effects = _small()
    OVER_BUDGET[what](effects)

    too_large = outbox.apply(_event(partition=3), effects, "route")
    await outbox.flush()

    assert too_large is not None and too_large.reason == "too_large"
    assert tables.throttles.get("ada") is None and tables.digests.get("ada") is None
    # The dead letter alone: not even the step's own records, nor its table writes' changelog.
    [(topic, key, value, _)] = producer.taken
    letter = DeadLetter.model_validate_json(value or b"")
    assert (topic, key, letter.reason, letter.stage) == (NAMES.dlq, b"ada", "too_large", "route")
    assert f"HERALD_MAX_RECORD_BYTES ({SMALLEST})" in letter.detail and letter.original == b"{raw}"
    assert (
        registry.get_sample_value("herald_dead_letters_total", {"stage": "route", "reason": "too_large"}) == 1
    )
    assert registry.get_sample_value("herald_scheduled_total", {"reason": "delay"}) is None


async def test_a_record_of_exactly_the_budget_goes_and_one_byte_more_does_not() -> None:
    producer = FlakyProducer()
    outbox, _, _ = make_outbox(producer, max_record_bytes=1_000)
    outbox.produce(Record("herald.deliver.inapp", b"ada", b"x" * 997))
    with pytest.raises(RecordTooLarge):
        outbox.produce(Record("herald.deliver.inapp", b"ada", b"x" * 998))
    await outbox.flush()
    assert [len(value or b"") for _, _, value, _ in producer.taken] == [997]


async def test_an_input_over_the_budget_does_not_stop_its_batch() -> None:
    # Before the guard, the producer refused the record and the batch ran again, forever (or, for a
    # changelog, the producer's buffer crashed and took the worker with it).
    producer = FlakyProducer()
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, "test")
    tables = Tables(*(StateTable(RecordingTable()) for _ in range(6)))  # type: ignore[arg-type]
    app = cast(Any, SimpleNamespace(producer=producer))
    settle = Settler(
        lambda: Outbox(publish_each(app.producer), NAMES, tables, metrics, lambda: NOW, 1_000), metrics
    )

    async def work(outbox: Outbox) -> None:
        outbox.apply(_event(), Effects(records=[Record("herald.routed", b"bob", b"x" * 5_000)]), "intake")
        outbox.apply(_event(), Effects(records=[Record("herald.routed", b"bob", b"fine")]), "intake")

    await asyncio.wait_for(settle.settle("intake", work), timeout=5)
    assert [topic for topic, *_ in producer.taken] == [NAMES.dlq, "herald.routed"]
    assert registry.get_sample_value("herald_batch_failures_total", {"agent": "intake"}) is None


@pytest.mark.parametrize("budget", [512 * 1024, 1_000_000, 8 * 1024 * 1024])
async def test_a_dead_letter_fits_the_budget_whatever_it_carries(budget: int) -> None:
    producer = FlakyProducer()
    outbox, _, _ = make_outbox(producer, max_record_bytes=budget)
    message = SimpleNamespace(
        topic="t" * 249, partition=3, offset=2**62, key=b"\x00" * 900_000, value=b"\x01" * 20_000_000
    )
    error = RecordTooLarge("\x00\u202e" * 5_000)  # escaped in JSON: six bytes each
    outbox.dead_letter(message, error, "intake")
    await outbox.flush()
    [(_, key, value, _)] = producer.taken
    assert len(key or b"") + len(value or b"") <= budget
    letter = DeadLetter.model_validate_json(value or b"")
    assert letter.original_truncated and letter.original == message.value[: len(letter.original)]
    assert len(letter.original) >= min(MAX_ORIGINAL_BYTES, budget // 2)


def test_the_budget_is_below_what_the_workers_producer_accepts() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    app = create_app(settings)
    accepted = app.conf.producer_max_request_size
    # aiokafka refuses a record whose estimate (key, value and framing) is over max_request_size.
    for key_bytes in (0, 200, 4096):
        key, value = b"k" * key_bytes, b"v" * (settings.max_record_bytes - key_bytes)
        assert DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, []) <= accepted
    # …and within what a Kafka broker takes by default (message.max.bytes), framing included.
    assert accepted <= 1_048_588
