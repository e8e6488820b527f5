"""Quiet-hour arithmetic: is a UTC instant inside a user's weekly local-time windows, and when do they end.

Local times become instants with `zoneinfo`. A local time skipped by a spring-forward gap becomes the first
instant after the gap (the transition itself); a local time repeated by a fall-back becomes its first
occurrence (`fold=0`), so a window ending at 01:30 on such a night ends when the clock first shows 01:30.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from schemas.preferences import QuietWindow, Weekday

# A window is shorter than a day (give or take a clock change), so one that holds an instant started on the
# instant's local day or the day before; two days back leaves a margin for zones that once skipped a day.
_LOOKBACK_DAYS = 2
# Back-to-back windows chain at most once per weekday, and windows shorter than a day never cover a week;
# the bound only guarantees the loop ends.
_MAX_CHAIN = 8


def local_to_utc(day: date, at: time, zone: tzinfo) -> datetime:
    """The UTC instant at which the wall clock in `zone` shows `at` on `day` (see the module docstring for
    gaps and repeats)."""
    wall = datetime.combine(day, at.replace(tzinfo=None, fold=0))
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap, fold=0 reads the wall time with the offset from before the transition, which lands after
    # it, and fold=1 with the offset from after, which lands before: the transition lies in between.
    return _transition_between(wall.replace(tzinfo=zone, fold=1).astimezone(UTC), first, zone)


def _transition_between(before: datetime, after: datetime, zone: tzinfo) -> datetime:
    """The first instant in (before, after] whose UTC offset differs from `before`'s (offsets change on
    whole seconds, so a bisection on seconds finds it exactly)."""
    offset = before.astimezone(zone).utcoffset()
    lo, hi = math.floor(before.timestamp()), math.floor(after.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == offset:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def _intervals_around(
    instant: datetime, zone: tzinfo, windows: Mapping[Weekday, QuietWindow]
) -> Iterator[tuple[datetime, datetime]]:
    """[start, end) in UTC of every window that starts on the instant's local day or shortly before."""
    today = instant.astimezone(zone).date()
    for back in range(_LOOKBACK_DAYS, -1, -1):
        day = today - timedelta(days=back)
        window = windows.get(Weekday.of(day.weekday()))
        if window is None:
            continue
        end_day = day if window.start < window.end else day + timedelta(days=1)
        yield local_to_utc(day, window.start, zone), local_to_utc(end_day, window.end, zone)


def _end_of_window_at(
    instant: datetime, zone: tzinfo, windows: Mapping[Weekday, QuietWindow]
) -> datetime | None:
    ends = [end for start, end in _intervals_around(instant, zone, windows) if start <= instant < end]
    return max(ends) if ends else None


def quiet_until(instant: datetime, zone: tzinfo, windows: Mapping[Weekday, QuietWindow]) -> datetime | None:
    """None when `instant` is outside quiet hours; otherwise the UTC instant they end, which is after
    `instant` and outside every window (back-to-back or overlapping windows are followed to the end)."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    at = instant.astimezone(UTC)
    end = _end_of_window_at(at, zone, windows)
    if end is None:
        return None
    for _ in range(_MAX_CHAIN):
        later = _end_of_window_at(end, zone, windows)
        if later is None:
            break
        end = later
    return end


def is_quiet(instant: datetime, zone: tzinfo, windows: Mapping[Weekday, QuietWindow]) -> bool:
    return quiet_until(instant, zone, windows) is not None
