"""Throttling: at most N notifications per window for a recipient, per channel or per category. Pure
functions over the recipient's record of recent sends (kept in a table partitioned by recipient)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from schemas.rules import MAX_THROTTLE_LIMIT, Throttle, parse_duration


def scope_key(throttle: Throttle, channel: str, category: str) -> str:
    return f"channel:{channel}" if throttle.scope == "channel" else f"category:{category}"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    free_at: float | None = None  # when a slot frees up (epoch seconds), for a throttled notification


def check(sent: Sequence[float], throttle: Throttle, now: float) -> Verdict:
    """May one more go out now, given the send times in `sent`?"""
    window = parse_duration(throttle.per)
    recent = sorted(t for t in sent if now - t < window)
    if len(recent) < throttle.limit:
        return Verdict(True)
    # The slot that frees first is the one taken by the oldest send still in the window.
    return Verdict(False, free_at=recent[-throttle.limit] + window)


def record(
    state: Mapping[str, Sequence[float]] | None,
    key: str,
    now: float,
    keep_seconds: float,
    keep_last: int = MAX_THROTTLE_LIMIT,
) -> dict[str, list[float]]:
    """The recipient's send record with `now` added under `key`; everything older than `keep_seconds`
    dropped (from every key), so the record never outgrows the longest window, and at most the newest
    `keep_last` times kept per key (a check needs only the newest `limit`), so a busy recipient's record
    stays bounded too."""
    pruned = {
        k: [t for t in times if now - t < keep_seconds][-keep_last:] for k, times in (state or {}).items()
    }
    kept = pruned.setdefault(key, [])
    kept.append(now)
    if len(kept) > keep_last:
        del kept[:-keep_last]
    return {k: times for k, times in pruned.items() if times}
