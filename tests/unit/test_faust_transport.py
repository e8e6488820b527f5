"""Herald's Faust transport: the consumer's read marks while the flow is stopped, and its fetch wait."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from adapters.broker.faust_transport import IDLE_SECONDS, ReadOffsets
from kernel.settings import Settings
from streams.app import create_app

TOPIC = TP("herald.deliver.email", 0)


def test_marks_move_freely_while_the_flow_runs() -> None:
    marks = ReadOffsets()
    marks[TOPIC] = 10
    marks[TOPIC] = 4
    marks[TOPIC] = 12
    assert marks[TOPIC] == 12


def test_held_marks_never_move_forward() -> None:
    # The fetch loop marks a record read even when the stopped flow made it give up handing it over: that
    # mark must not land, or the record's copy fetched after the seek is discarded as already read.
    marks = ReadOffsets()
    marks[TOPIC] = 10
    marks.held = True
    marks[TOPIC] = 11
    assert marks[TOPIC] == 10
    marks[TOPIC] = 3  # a seek back still moves it
    assert marks[TOPIC] == 3
    marks[TOPIC] = None  # "nothing read": the most permissive mark
    assert marks[TOPIC] is None
    marks[TP("other", 1)] = 7  # a first mark is a move forward from "anything goes"
    assert marks[TP("other", 1)] is None


def test_dict_update_from_a_seek_applies_while_held() -> None:
    # Faust's perform_seek sets the marks to the committed offsets with dict.update, held or not.
    marks = ReadOffsets()
    marks.held = True
    marks.update({TOPIC: 42})
    assert marks[TOPIC] == 42


async def test_the_worker_consumer_fetches_with_the_configured_wait() -> None:
    # Faust builds its consumer with a fixed 1,500 ms fetch wait; every hop would pay it on a broker that
    # holds fetches. The app's transport must hand HERALD_FETCH_MAX_WAIT_MS to the consumer it creates.
    app = create_app(Settings(_env_file=None, fetch_max_wait_ms=7))  # type: ignore[call-arg]
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 7
    finally:
        await consumer.stop()


async def test_by_default_the_worker_consumer_does_not_keep_fausts_fixed_wait() -> None:
    # Faust's 1,500 ms cost 0.75-1.5 s per hop on a broker that holds fetches.
    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == Settings.model_fields["fetch_max_wait_ms"].default < 1500
    finally:
        await consumer.stop()


def test_pausing_in_fausts_books_pauses_the_fetcher_too() -> None:
    # Faust pauses partitions by leaving them out of the ones it drains; aiokafka kept fetching them and,
    # each time such a fetch brought records, held back every other fetch for 100 ms.
    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    consumer = app.consumer
    asked: list[tuple[set[TP], bool]] = []
    consumer._thread.set_fetching = lambda tps, fetching: asked.append((set(tps), fetching))
    changelog, stream = TP("herald-inbox-changelog", 3), TOPIC

    consumer.pause_partitions(iter([changelog, stream]))  # any iterable, read once
    consumer.resume_partitions([stream])

    assert asked == [({changelog, stream}, False), ({stream}, True)]
    assert consumer._paused_partitions == {changelog}


async def test_an_idle_worker_fetches_with_the_idle_wait_until_a_record_is_handed_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An idle worker's 10 ms fetches cost the embedded broker about 0.3 of a core; once a fetch hands
    # something over, the next request is built with the short wait again.
    settings = Settings(_env_file=None, fetch_max_wait_ms=7, idle_fetch_max_wait_ms=90)  # type: ignore[call-arg]
    app = create_app(settings)
    consumer = app.consumer
    fetcher = SimpleNamespace(_fetch_max_wait_ms=7)
    consumer._thread._consumer = SimpleNamespace(_fetcher=fetcher)
    now = [1000.0]
    monkeypatch.setattr("adapters.broker.faust_transport.time.monotonic", lambda: now[0])
    handing_over: list[dict[TP, list[Any]]] = []

    async def fetched(self: Any, active_partitions: Any, timeout: float) -> dict[TP, list[Any]]:
        return handing_over.pop(0)

    monkeypatch.setattr(faust_aiokafka.Consumer, "_getmany", fetched)
    # Each round's wait is chosen as it starts, from what earlier rounds handed over.
    waits = []
    for records, later in [
        ({TOPIC: ["a record"]}, 0.5),  # nothing handed over yet: idle
        ({}, IDLE_SECONDS - 0.6),  # 0.5 s since the record: the configured wait
        ({}, 0.2),  # 0.5 + 0.4 s: still under IDLE_SECONDS
        ({TOPIC: ["a record"]}, 0.0),  # 1.1 s: idle; and this round hands a record over
        ({}, 0.0),  # so the next is short again
    ]:
        handing_over.append(records)
        await consumer._getmany(None, 0.1)
        waits.append(fetcher._fetch_max_wait_ms)
        now[0] += later
    assert waits == [90, 7, 7, 90, 7]


async def test_the_idle_wait_is_never_shorter_than_the_configured_one() -> None:
    settings = Settings(_env_file=None, fetch_max_wait_ms=500, idle_fetch_max_wait_ms=100)  # type: ignore[call-arg]
    consumer = create_app(settings).consumer
    fetcher = SimpleNamespace(_fetch_max_wait_ms=500)
    consumer._thread._consumer = SimpleNamespace(_fetcher=fetcher)
    consumer._last_handed_over = -1e9  # never
    consumer._tune_fetch_wait()
    assert fetcher._fetch_max_wait_ms == 500
