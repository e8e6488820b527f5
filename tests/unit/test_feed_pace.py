"""gateway.feed_kafka.FetchPace: the feed's fetch wait follows its rate, measured each second."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.feed_kafka import BUSY_RECORDS_PER_SECOND, FetchPace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pace(quiet_ms: int = 10, busy_ms: int = 100) -> tuple[FetchPace, SimpleNamespace, Clock]:
    fetcher, clock = SimpleNamespace(_fetch_max_wait_ms=quiet_ms), Clock()
    return FetchPace(fetcher, quiet_ms, busy_ms, clock), fetcher, clock


def test_a_busy_second_lengthens_the_wait_and_a_quiet_one_shortens_it_again() -> None:
    pace, fetcher, clock = _pace()
    for _ in range(8):
        clock.now += 0.125
        pace.handed_over(BUSY_RECORDS_PER_SECOND // 8)
    assert fetcher._fetch_max_wait_ms == 100
    for _ in range(8):
        clock.now += 0.125
        pace.handed_over(BUSY_RECORDS_PER_SECOND // 8 - 1)
    assert fetcher._fetch_max_wait_ms == 10


def test_the_wait_changes_only_once_a_second_has_passed() -> None:
    pace, fetcher, clock = _pace()
    clock.now += 0.5
    pace.handed_over(50_000)
    assert fetcher._fetch_max_wait_ms == 10
    clock.now += 0.5
    pace.handed_over(0)
    assert fetcher._fetch_max_wait_ms == 100


def test_the_busy_wait_is_never_shorter_than_the_quiet_one() -> None:
    pace, fetcher, clock = _pace(quiet_ms=500, busy_ms=100)
    clock.now += 1.0
    pace.handed_over(50_000)
    assert fetcher._fetch_max_wait_ms == 500
