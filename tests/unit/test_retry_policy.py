from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.delivery.retry_policy import RetryPolicy


def test_delays_grow_exponentially_without_jitter() -> None:
    policy = RetryPolicy(base_delay_seconds=1, multiplier=3, jitter=0, max_delay_seconds=20)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1, 3, 9, 20]


@given(st.integers(1, 30), st.floats(0, 1, exclude_max=True))
def test_jitter_stays_within_bounds(attempt: int, r: float) -> None:
    policy = RetryPolicy(base_delay_seconds=2, multiplier=2, jitter=0.25, max_delay_seconds=100)
    raw = min(2 * 2 ** (attempt - 1), 100)
    assert raw * 0.75 <= policy.delay(attempt, rand=lambda: r) <= raw * 1.25


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(base_delay_seconds=1, jitter=0)
    assert policy.delay(1, retry_after=30) == 30
    assert policy.delay(1, retry_after=0.1) == 1


def test_tiers_and_exhaustion() -> None:
    policy = RetryPolicy(max_attempts=5, tiers=2)
    assert [policy.tier_for(n) for n in (2, 3, 4, 5)] == [1, 2, 2, 2]
    assert not policy.exhausted(4)
    assert policy.exhausted(5)


def test_not_before_is_in_the_future() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert RetryPolicy(jitter=0, base_delay_seconds=5).not_before(now, 1) == now + timedelta(seconds=5)


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
