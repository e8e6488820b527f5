"""adapters.broker.fetch_schedule: the retry and scheduler tiers go into a fetch round once per interval, the
hot topics into every round, and a round with nothing hot to ask for waits no longer than the tiers' turn."""

from __future__ import annotations

from aiokafka.protocol.fetch import FetchRequest

from adapters.broker.fetch_schedule import DelayedTopics
from kernel.settings import Settings
from kernel.topics import TopicNames

HOT, TIER = "herald.events", "herald.scheduled.5s"
MAX_WAIT = 10
FETCHER_TIMEOUT = 0.2  # aiokafka's own wait between rounds when nothing else wakes it


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def request(*topics: str) -> FetchRequest:
    return FetchRequest(
        MAX_WAIT, 1, 52_428_800, 0, [(t, [(0, 5, 1_048_576), (1, 7, 1_048_576)]) for t in topics]
    )


def topics_of(requests: list[tuple[int, FetchRequest]]) -> list[tuple[int, list[str]]]:
    return [(node, [topic for topic, _ in r.topics]) for node, r in requests]


def test_the_tiers_go_in_once_per_interval() -> None:
    clock = Clock()
    schedule = DelayedTopics(frozenset({TIER}), 0.25, clock)

    first, _ = schedule.schedule([(1, request(HOT, TIER))], FETCHER_TIMEOUT)
    clock.now += 0.1
    second, timeout = schedule.schedule([(1, request(HOT, TIER))], FETCHER_TIMEOUT)
    clock.now += 0.15
    third, _ = schedule.schedule([(1, request(HOT, TIER))], FETCHER_TIMEOUT)

    assert topics_of(first) == [(1, [HOT, TIER])]
    assert topics_of(second) == [(1, [HOT])]
    assert abs(timeout - 0.15) < 1e-9  # aiokafka would wait 0.2 s: the next round must come when they are due
    assert topics_of(third) == [(1, [HOT, TIER])]


def test_a_request_left_without_the_tiers_keeps_everything_else_it_asked() -> None:
    clock = Clock()
    schedule = DelayedTopics(frozenset({TIER}), 0.25, clock)
    schedule.schedule([(1, request(TIER))], FETCHER_TIMEOUT)  # the tiers' turn is taken
    clock.now += 0.01
    asked = request(HOT, TIER)

    [(node, sent)] = schedule.schedule([(1, asked)], FETCHER_TIMEOUT)[0]

    assert node == 1
    assert sent.topics == [(HOT, [(0, 5, 1_048_576), (1, 7, 1_048_576)])]  # partitions, positions, sizes
    assert (sent._max_wait_ms, sent._min_bytes, sent._max_bytes, sent._isolation_level) == (
        asked._max_wait_ms,
        asked._min_bytes,
        asked._max_bytes,
        asked._isolation_level,
    )


def test_with_only_tiers_to_ask_for_a_round_sends_nothing_and_wakes_when_they_are_due() -> None:
    clock = Clock()
    schedule = DelayedTopics(frozenset({TIER}), 0.25, clock)
    schedule.schedule([(1, request(TIER))], FETCHER_TIMEOUT)
    clock.now += 0.2

    requests, timeout = schedule.schedule([(1, request(TIER))], FETCHER_TIMEOUT)

    assert requests == []
    assert abs(timeout - 0.05) < 1e-9


def test_the_turn_is_not_used_up_by_a_round_that_carried_no_tier() -> None:
    # A round in which the broker was still busy with the last request asks for nothing: the tiers must go
    # in the next one, not wait another interval.
    clock = Clock()
    schedule = DelayedTopics(frozenset({TIER}), 0.25, clock)
    schedule.schedule([], FETCHER_TIMEOUT)
    schedule.schedule([(1, request(HOT))], FETCHER_TIMEOUT)
    clock.now += 0.01

    requests, _ = schedule.schedule([(1, request(HOT, TIER))], FETCHER_TIMEOUT)

    assert topics_of(requests) == [(1, [HOT, TIER])]


def test_the_delayed_topics_are_the_retry_and_scheduler_tiers() -> None:
    names = TopicNames.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    tiers = {name for retries in names.retries.values() for name in retries} | set(names.scheduled.values())

    assert names.delayed == tiers
    assert tiers and not tiers & (names.batch_fed | {names.users, names.preferences})
