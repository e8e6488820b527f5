"""adapters.broker.fetch_schedule.FetchPace: a consumer's fetch wait follows the records it hands over,
measured each second."""

from __future__ import annotations

from adapters.broker.fetch_schedule import BUSY_RECORDS_PER_SECOND, FetchPace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_busy_second_lengthens_the_wait_and_a_quiet_one_shortens_it_again() -> None:
    clock = Clock()
    pace = FetchPace(10, 100, clock)
    for _ in range(8):
        clock.now += 0.125
        pace.handed_over(BUSY_RECORDS_PER_SECOND // 8)
    assert pace.wait_ms == 100
    for _ in range(8):
        clock.now += 0.125
        waited = pace.handed_over(BUSY_RECORDS_PER_SECOND // 8 - 1)
    assert pace.wait_ms == waited == 10


def test_the_wait_changes_only_once_a_second_has_passed() -> None:
    clock = Clock()
    pace = FetchPace(10, 100, clock)
    clock.now += 0.5
    assert pace.handed_over(50_000) == 10
    clock.now += 0.5
    assert pace.handed_over(0) == 100


def test_the_busy_wait_is_never_shorter_than_the_quiet_one() -> None:
    clock = Clock()
    pace = FetchPace(500, 100, clock)
    clock.now += 1.0
    assert pace.handed_over(50_000) == 500
