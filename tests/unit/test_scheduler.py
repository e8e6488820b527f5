"""The scheduler's tier arithmetic: where a held record waits, when it wakes, and what it turns into."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.errors import InvalidEvent
from kernel.topics import SCHEDULER_TIERS_SECONDS
from schemas.reasons import DecisionReason
from schemas.scheduled import Scheduled
from streams.effects import Later, Record
from streams.scheduling.tiers import hold, read_held, release, tier_for, wake_at

TIERS = {tier: f"herald.scheduled.{tier}s" for tier in SCHEDULER_TIERS_SECONDS}
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_tiers() -> None:
    assert tier_for(0.2) == 1
    assert tier_for(4) == 1
    assert tier_for(5) == 5
    assert tier_for(299) == 30
    assert tier_for(8 * 3600) == 3600


@given(st.floats(min_value=1, max_value=1e7, allow_nan=False))
def test_a_tier_never_overshoots_what_remains(remaining: float) -> None:
    assert tier_for(remaining) <= remaining
    assert tier_for(remaining) in SCHEDULER_TIERS_SECONDS


def test_a_later_is_held_on_the_longest_tier_that_fits_keyed_like_its_target() -> None:
    later = Later(NOW + timedelta(seconds=40), Record("herald.deliver.email", b"ada", b"{}"), "quiet_hours")
    placed = hold(later, NOW, TIERS)
    assert placed.topic == "herald.scheduled.30s"
    assert placed.key == b"ada"
    held = Scheduled.model_validate_json(placed.value or b"")
    assert (held.target, held.key, held.value, held.reason) == (
        "herald.deliver.email",
        b"ada",
        b"{}",
        "quiet_hours",
    )


def test_a_record_scheduled_into_a_foreign_topic_is_refused() -> None:
    raw = Scheduled.wrap(NOW, "payments", b"k", b"v", "delay").to_json()
    with pytest.raises(InvalidEvent) as caught:
        read_held(raw, {"herald.deliver.email"})
    assert caught.value.reason == "invalid_scheduled"
    with pytest.raises(InvalidEvent):
        read_held(b"not json", {"herald.deliver.email"})


def test_a_record_held_before_the_throttle_reason_was_renamed_is_still_released() -> None:
    raw = Scheduled.wrap(NOW, "herald.deliver.push", b"ada", b"{}", DecisionReason.THROTTLED).to_json()
    assert b'"reason":"throttled"' in raw
    held = read_held(raw.replace(b'"throttled"', b'"throttle"'), {"herald.deliver.push"})
    assert held.reason is DecisionReason.THROTTLED
    with pytest.raises(InvalidEvent):  # any other value is not a reason a record waits for
        read_held(raw.replace(b'"throttled"', b'"whenever"'), {"herald.deliver.push"})


def test_a_due_record_is_released_to_its_target_and_an_early_one_goes_down_a_tier() -> None:
    held = Scheduled.wrap(NOW + timedelta(seconds=7), "herald.routed", b"ada", b"release", "digest")
    early, due = release(held, NOW, TIERS)
    assert not due and early.topic == "herald.scheduled.5s"
    out, due = release(held, NOW + timedelta(seconds=7), TIERS)
    assert due and out == Record("herald.routed", b"ada", b"release")


def test_a_record_wakes_when_its_tier_wait_is_over_or_when_it_is_due() -> None:
    held = Scheduled.wrap(NOW + timedelta(seconds=100), "herald.routed", b"k", b"v", "delay")
    assert wake_at(held, NOW.timestamp(), 30) == NOW.timestamp() + 30
    assert wake_at(held, NOW.timestamp(), 300) == NOW.timestamp() + 100
