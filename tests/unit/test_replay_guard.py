"""streams/ops/replay_guard.py: each signed request is taken once within its tolerance window, in bounded
memory that forgets what could not be replayed anyway."""

from __future__ import annotations

import pytest

from streams.ops.replay_guard import ReplayGuard, ReplayMemoryFull

TOLERANCE = 600.0
NOW = 1_795_000_000.0


def test_the_same_signed_content_is_taken_once() -> None:
    guard = ReplayGuard(TOLERANCE)
    assert guard.claim("1795000000", b"[1]", now=NOW)
    assert not guard.claim("1795000000", b"[1]", now=NOW + 1)
    assert guard.claim("1795000001", b"[1]", now=NOW + 1)  # signed again: another request
    assert guard.claim("1795000000", b"[2]", now=NOW + 1)


def test_a_released_claim_can_be_taken_again() -> None:
    guard = ReplayGuard(TOLERANCE)
    assert guard.claim("1795000000", b"[1]", now=NOW)
    guard.release("1795000000", b"[1]")
    assert guard.claim("1795000000", b"[1]", now=NOW)


def test_what_is_past_the_tolerance_window_is_forgotten() -> None:
    guard = ReplayGuard(TOLERANCE)
    guard.claim("1795000000", b"[1]", now=NOW)
    guard.claim("1795000300", b"[2]", now=NOW + 300)
    assert len(guard) == 2
    # Past the first request's window (it would be refused as stale now); the second is still kept.
    guard.claim("1795000700", b"[3]", now=NOW + TOLERANCE + 100)
    assert len(guard) == 2
    assert not guard.claim("1795000300", b"[2]", now=NOW + TOLERANCE + 100)


def test_a_full_memory_refuses_rather_than_forgets() -> None:
    guard = ReplayGuard(TOLERANCE, capacity=2)
    guard.claim("1795000000", b"[1]", now=NOW)
    guard.claim("1795000000", b"[2]", now=NOW)
    with pytest.raises(ReplayMemoryFull):
        guard.claim("1795000000", b"[3]", now=NOW)
    assert not guard.claim("1795000000", b"[1]", now=NOW)  # still remembered
    # Once the window has passed, there is room again.
    assert guard.claim("1795000700", b"[3]", now=NOW + TOLERANCE + 100)
