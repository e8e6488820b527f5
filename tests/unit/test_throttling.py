from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.rules import MAX_THROTTLE_LIMIT, Throttle
from streams.routing.throttling import check, record, scope_key

THREE_AN_HOUR = Throttle(limit=3, per="1h")


def test_allows_up_to_the_limit_then_says_when_a_slot_frees() -> None:
    sent = [0.0, 100.0, 200.0]
    assert check(sent[:2], THREE_AN_HOUR, now=300.0).allowed
    verdict = check(sent, THREE_AN_HOUR, now=300.0)
    assert not verdict.allowed and verdict.free_at == 3600.0
    assert check(sent, THREE_AN_HOUR, now=3600.0).allowed  # the first send left the window


def test_record_prunes_old_times_everywhere() -> None:
    state = record(None, "channel:sms", 0.0, keep_seconds=3600)
    state = record(state, "channel:push", 10.0, keep_seconds=3600)
    state = record(state, "channel:sms", 4000.0, keep_seconds=3600)
    assert state == {"channel:sms": [4000.0]}


def test_scope_keys() -> None:
    assert scope_key(THREE_AN_HOUR, "sms", "orders") == "channel:sms"
    assert scope_key(Throttle(limit=1, per="1d", scope="category"), "sms", "orders") == "category:orders"


@given(st.lists(st.floats(min_value=0, max_value=10_000), max_size=30), st.integers(1, 5))
def test_never_more_than_limit_in_any_window(times: list[float], limit: int) -> None:
    throttle = Throttle(limit=limit, per="10m")
    sent: list[float] = []
    for now in sorted(times):
        if check(sent, throttle, now).allowed:
            sent.append(now)
    for t in sent:
        assert len([s for s in sent if t <= s < t + 600]) <= limit


def test_a_busy_recipients_record_keeps_only_the_newest_times_a_check_can_need() -> None:
    # Pruned by time alone, a permissive rule (100 a minute) would grow a day's record past the record
    # budget; a check needs only the newest `limit` times, so only the newest `keep_last` are kept.
    hundred_a_minute = Throttle(limit=100, per="1m")
    state: dict[str, list[float]] | None = None
    for n in range(2_000):
        state = record(state, "channel:email", n * 0.5, keep_seconds=86_400, keep_last=150)
    assert state is not None and len(state["channel:email"]) == 150
    assert state["channel:email"][-1] == 999.5
    assert not check(state["channel:email"], hundred_a_minute, now=1000.0).allowed


def test_no_rule_can_ask_for_more_history_than_is_kept() -> None:
    with pytest.raises(ValidationError):
        Throttle(limit=MAX_THROTTLE_LIMIT + 1, per="1d")
