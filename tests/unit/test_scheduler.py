from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.scheduling.agents import TIERS_SECONDS, tier_for


def test_tiers() -> None:
    assert tier_for(0.2) == 1
    assert tier_for(4) == 1
    assert tier_for(5) == 5
    assert tier_for(299) == 30
    assert tier_for(8 * 3600) == 3600


@given(st.floats(min_value=1, max_value=1e7, allow_nan=False))
def test_a_tier_never_overshoots_what_remains(remaining: float) -> None:
    assert tier_for(remaining) <= remaining
    assert tier_for(remaining) in TIERS_SECONDS
