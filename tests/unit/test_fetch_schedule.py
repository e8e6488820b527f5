"""adapters.broker.fetch_schedule: the retry and scheduler tiers go into a fetch round once per interval, the
hot topics into every round, and a round with nothing hot to ask for waits no longer than the tiers' turn;
and a round that finds a broker busy with no fetch task left does not wait; FetchPace's wait follows the
records a consumer hands over, measured each second."""

from __future__ import annotations

from aiokafka.protocol.fetch import FetchRequest

from adapters.broker.fetch_schedule import (
    BUSY_RECORDS_PER_SECOND,
    DelayedTopics,
    FetchPace,
    wake_after_reaped_fetches,
)
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


class Fetcher:
    """What `wake_after_reaped_fetches` reads of aiokafka's fetcher, and the round it wraps."""

    def __init__(self, requests: list[tuple[int, FetchRequest]], in_flight: set[int], pending: int) -> None:
        self._requests = requests
        self._in_flight = in_flight
        self._pending_tasks = {object() for _ in range(pending)}

    def _get_actions_per_node(self, assignment: object) -> tuple[object, ...]:
        return self._requests, {}, FETCHER_TIMEOUT, False, []


def timeout_of(fetcher: Fetcher) -> float:
    wake_after_reaped_fetches(fetcher)
    _, _, timeout, _, _ = fetcher._get_actions_per_node(None)
    assert isinstance(timeout, float | int)
    return timeout


def test_a_broker_left_busy_by_a_reaped_fetch_does_not_hold_the_next_round() -> None:
    # aiokafka reaped the finished task, but the callback that frees its broker has not run yet: nothing
    # would wake a 200 ms wait.
    assert timeout_of(Fetcher([], in_flight={1}, pending=0)) == 0


def test_a_fetch_still_running_or_a_round_that_sends_keeps_its_wait() -> None:
    assert timeout_of(Fetcher([], in_flight={1}, pending=1)) == FETCHER_TIMEOUT  # its end wakes the routine
    assert timeout_of(Fetcher([(1, request(HOT))], in_flight=set(), pending=0)) == FETCHER_TIMEOUT
    assert timeout_of(Fetcher([], in_flight=set(), pending=0)) == FETCHER_TIMEOUT  # idle: nothing to fetch


def test_a_busy_second_lengthens_the_wait_and_a_quiet_one_shortens_it_again() -> None:
    clock = Clock()
    pace = FetchPace(10, 100, 100, clock)
    for _ in range(8):
        clock.now += 0.125
        pace.handed_over(BUSY_RECORDS_PER_SECOND // 8)
    assert pace.wait_ms == 100
    clock.now += 0.125
    assert pace.handed_over(10) == 100  # a hand-over while busy keeps the busy wait (the idle one is as long)
    for _ in range(8):
        clock.now += 0.125
        waited = pace.handed_over(BUSY_RECORDS_PER_SECOND // 8 - 1)
    assert pace.wait_ms == waited == 10


def test_the_wait_changes_only_once_a_second_has_passed() -> None:
    clock = Clock()
    pace = FetchPace(10, 100, 100, clock)
    clock.now += 0.5
    assert pace.handed_over(50_000) == 10
    clock.now += 0.5
    assert pace.handed_over(0) == 100


def test_the_busy_and_the_idle_wait_are_never_shorter_than_the_quiet_one() -> None:
    clock = Clock()
    pace = FetchPace(500, 100, 100, clock)
    clock.now += 1.0
    assert pace.handed_over(50_000) == 500  # busy
    clock.now += 1.0
    assert pace.handed_over(0) == 500  # idle


def test_an_idle_second_lengthens_the_wait_and_the_first_record_ends_it() -> None:
    # An idle gateway's 10 ms fetches cost it and the embedded broker about 0.13 of a core.
    clock = Clock()
    pace = FetchPace(10, 100, 250, clock)
    clock.now += 0.5
    assert pace.handed_over(3) == 10
    clock.now += 0.6
    assert pace.handed_over(0) == 10  # three records in the second just passed: not idle
    clock.now += 1.0
    assert pace.handed_over(0) == 250  # a second without a record
    clock.now += 0.1
    assert pace.handed_over(1) == 10  # at once, not at the end of the second
    clock.now += 1.0
    assert pace.handed_over(0) == 10  # the second held that record
