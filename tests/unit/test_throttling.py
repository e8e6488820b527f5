from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.rules import Throttle
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
