from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.preferences import QuietWindow, Weekday
from streams.routing.quiet_hours import is_quiet, local_to_utc, quiet_until

NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
CHATHAM = ZoneInfo("Pacific/Chatham")
ZONES = [
    NEW_YORK,
    LONDON,
    BERLIN,
    LORD_HOWE,
    CHATHAM,
    ZoneInfo("UTC"),
    ZoneInfo("Asia/Kolkata"),
    ZoneInfo("America/Santiago"),
    ZoneInfo("Pacific/Kiritimati"),
]
# The 2026 clock changes of those zones, in UTC: instants near them are where the arithmetic is tested.
TRANSITIONS = [
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
    datetime(2026, 4, 4, 15, 0, tzinfo=UTC),
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),
    datetime(2026, 4, 4, 14, 0, tzinfo=UTC),
    datetime(2026, 9, 26, 14, 0, tzinfo=UTC),
]


def window(start: str, end: str) -> QuietWindow:
    return QuietWindow(start=time.fromisoformat(start), end=time.fromisoformat(end))


def nightly(start: str = "22:00", end: str = "07:00") -> dict[Weekday, QuietWindow]:
    return dict.fromkeys(Weekday, window(start, end))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# --- local times that do not exist or exist twice -------------------------------------------------


def test_a_time_in_the_us_spring_forward_gap_resolves_to_the_transition() -> None:
    # 2026-03-08: New York's clocks go from 02:00 EST to 03:00 EDT; 02:30 never happens.
    assert local_to_utc(date(2026, 3, 8), time(2, 30), NEW_YORK) == utc(2026, 3, 8, 7, 0)


def test_a_repeated_time_in_the_us_fall_back_resolves_to_its_first_occurrence() -> None:
    # 2026-11-01: 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST).
    assert local_to_utc(date(2026, 11, 1), time(1, 30), NEW_YORK) == utc(2026, 11, 1, 5, 30)


def test_ordinary_times_convert_with_the_offset_of_the_day() -> None:
    assert local_to_utc(date(2026, 1, 15), time(7), NEW_YORK) == utc(2026, 1, 15, 12)
    assert local_to_utc(date(2026, 7, 15), time(7), NEW_YORK) == utc(2026, 7, 15, 11)


# --- deferrals across the 2026 clock changes ------------------------------------------------------


def test_us_spring_forward_night_ends_at_seven_edt() -> None:
    # Saturday 22:00 EST to Sunday 07:00 EDT: only eight hours of real time.
    at = utc(2026, 3, 8, 5, 0)  # 00:00 EST
    assert quiet_until(at, NEW_YORK, nightly()) == utc(2026, 3, 8, 11, 0)


def test_us_window_ending_inside_the_gap_ends_at_the_transition() -> None:
    windows = {Weekday.SUN: window("01:00", "02:30")}
    assert quiet_until(utc(2026, 3, 8, 6, 30), NEW_YORK, windows) == utc(2026, 3, 8, 7, 0)
    assert not is_quiet(utc(2026, 3, 8, 7, 0), NEW_YORK, windows)


def test_us_fall_back_night_ends_at_seven_est() -> None:
    at = utc(2026, 11, 1, 5, 30)  # 01:30 EDT, the first of two
    assert quiet_until(at, NEW_YORK, nightly()) == utc(2026, 11, 1, 12, 0)


def test_us_window_ending_at_a_repeated_time_ends_at_its_first_occurrence() -> None:
    windows = {Weekday.SAT: window("23:00", "01:30")}
    assert quiet_until(utc(2026, 11, 1, 5, 0), NEW_YORK, windows) == utc(2026, 11, 1, 5, 30)
    # The second 01:10 (EST) comes after the window ended.
    assert not is_quiet(utc(2026, 11, 1, 6, 10), NEW_YORK, windows)


def test_eu_spring_forward_in_london_and_berlin() -> None:
    # 2026-03-29 01:00 UTC: London 01:00 GMT → 02:00 BST, Berlin 02:00 CET → 03:00 CEST.
    london = {Weekday.SAT: window("23:00", "01:30")}
    assert quiet_until(utc(2026, 3, 29, 0, 30), LONDON, london) == utc(2026, 3, 29, 1, 0)
    berlin = {Weekday.SAT: window("23:00", "02:30")}
    assert quiet_until(utc(2026, 3, 29, 0, 30), BERLIN, berlin) == utc(2026, 3, 29, 1, 0)
    assert quiet_until(utc(2026, 3, 29, 0, 30), BERLIN, nightly()) == utc(2026, 3, 29, 5, 0)


def test_lord_howe_half_hour_spring_forward() -> None:
    # 2026-10-04 02:00 +10:30 → 02:30 +11:00; 02:15 does not exist.
    windows = {Weekday.SAT: window("23:00", "02:15")}
    assert quiet_until(utc(2026, 10, 3, 15, 0), LORD_HOWE, windows) == utc(2026, 10, 3, 15, 30)
    assert quiet_until(utc(2026, 10, 3, 15, 0), LORD_HOWE, nightly()) == utc(2026, 10, 3, 20, 0)


def test_chatham_quarter_hour_offsets() -> None:
    # 2026-09-27 02:45 +12:45 → 03:45 +13:45.
    windows = {Weekday.SAT: window("22:00", "03:00")}
    assert quiet_until(utc(2026, 9, 26, 12, 0), CHATHAM, windows) == utc(2026, 9, 26, 14, 0)
    assert quiet_until(utc(2026, 9, 26, 12, 0), CHATHAM, nightly()) == utc(2026, 9, 26, 17, 15)


# --- midnight, weekday and week boundaries --------------------------------------------------------


def test_a_window_belongs_to_the_day_it_starts_on() -> None:
    windows = {Weekday.FRI: window("22:00", "07:00")}
    # 2026-01-16 is a Friday: Friday 03:00 is not quiet (Thursday has no window), Saturday 03:00 is.
    assert not is_quiet(utc(2026, 1, 16, 3), LONDON, windows)
    assert quiet_until(utc(2026, 1, 17, 3), LONDON, windows) == utc(2026, 1, 17, 7)
    assert quiet_until(utc(2026, 1, 16, 22), LONDON, windows) == utc(2026, 1, 17, 7)
    assert not is_quiet(utc(2026, 1, 17, 7), LONDON, windows)  # the end is not part of the window


def test_sunday_night_window_reaches_into_the_next_week() -> None:
    windows = {Weekday.SUN: window("21:00", "06:30")}
    assert quiet_until(utc(2026, 1, 19, 2), LONDON, windows) == utc(2026, 1, 19, 6, 30)  # Monday


def test_back_to_back_and_overlapping_windows_are_followed_to_their_end() -> None:
    windows = {Weekday.FRI: window("22:00", "07:00"), Weekday.SAT: window("06:00", "09:00")}
    assert quiet_until(utc(2026, 1, 16, 23), LONDON, windows) == utc(2026, 1, 17, 9)
    touching = {Weekday.FRI: window("22:00", "07:00"), Weekday.SAT: window("07:00", "08:00")}
    assert quiet_until(utc(2026, 1, 16, 23), LONDON, touching) == utc(2026, 1, 17, 8)


def test_a_daytime_window_uses_the_local_day() -> None:
    # Kolkata is +05:30: Monday 2026-01-19 13:00 local is 07:30 UTC.
    windows = {Weekday.MON: window("12:00", "14:00")}
    kolkata = ZoneInfo("Asia/Kolkata")
    assert quiet_until(utc(2026, 1, 19, 7, 30), kolkata, windows) == utc(2026, 1, 19, 8, 30)
    assert not is_quiet(utc(2026, 1, 20, 7, 30), kolkata, windows)


def test_no_windows_is_never_quiet() -> None:
    assert quiet_until(utc(2026, 1, 1), LONDON, {}) is None


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        quiet_until(datetime(2026, 1, 1), LONDON, nightly())


# --- properties -----------------------------------------------------------------------------------

# Times on quarter hours most of the time, so window ends often fall on or in clock changes.
quarter_hours = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
any_minute = st.builds(time, st.integers(0, 23), st.integers(0, 59))
times = st.one_of(quarter_hours, any_minute)
windows_st = st.dictionaries(
    st.sampled_from(list(Weekday)),
    st.tuples(times, times)
    .filter(lambda pair: pair[0] != pair[1])
    .map(lambda pair: QuietWindow(start=pair[0], end=pair[1])),
    max_size=7,
)
near_transitions = st.builds(
    lambda base, minutes: base + timedelta(minutes=minutes),
    st.sampled_from(TRANSITIONS),
    st.integers(-36 * 60, 36 * 60),
)
anywhere = st.datetimes(datetime(2026, 1, 1), datetime(2027, 1, 1), timezones=st.just(UTC))
instants = st.one_of(near_transitions, anywhere)


def _wall_oracle(instant: datetime, zone: ZoneInfo, windows: dict[Weekday, QuietWindow]) -> bool:
    """Quiet by wall-clock comparison alone: exact when no clock change is near."""
    local = instant.astimezone(zone).replace(tzinfo=None)
    for back in (1, 0):
        day = local.date() - timedelta(days=back)
        w = windows.get(Weekday.of(day.weekday()))
        if w is None:
            continue
        start = datetime.combine(day, w.start)
        end = datetime.combine(day if w.start < w.end else day + timedelta(days=1), w.end)
        if start <= local < end:
            return True
    return False


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ZONES), windows_st, instants)
def test_a_deferral_is_in_the_future_outside_every_window_and_at_a_window_end(
    zone: ZoneInfo, windows: dict[Weekday, QuietWindow], instant: datetime
) -> None:
    end = quiet_until(instant, zone, windows)
    if end is None:
        return
    assert end.tzinfo is not None
    assert end.utcoffset() == timedelta(0)
    assert end > instant
    assert quiet_until(end, zone, windows) is None
    local_end = end.astimezone(zone)
    at_a_window_end = local_end.time().replace(tzinfo=None) in {w.end for w in windows.values()}
    just_before = (end - timedelta(seconds=1)).astimezone(zone)
    at_a_clock_change = just_before.utcoffset() != local_end.utcoffset()
    assert at_a_window_end or at_a_clock_change


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ZONES), windows_st, instants, st.floats(0, 1))
def test_every_instant_before_the_deferral_is_quiet_with_the_same_end(
    zone: ZoneInfo, windows: dict[Weekday, QuietWindow], instant: datetime, fraction: float
) -> None:
    end = quiet_until(instant, zone, windows)
    if end is None:
        return
    later = instant + (end - instant) * fraction
    if later < end:
        assert quiet_until(later, zone, windows) == end


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ZONES), windows_st, anywhere)
def test_away_from_clock_changes_quiet_hours_are_plain_wall_clock_intervals(
    zone: ZoneInfo, windows: dict[Weekday, QuietWindow], instant: datetime
) -> None:
    offsets = {(instant + timedelta(hours=h)).astimezone(zone).utcoffset() for h in range(-72, 73, 6)}
    if len(offsets) > 1:
        return
    assert is_quiet(instant, zone, windows) == _wall_oracle(instant, zone, windows)


# Each 2026 clock change with its zone, for windows built to start or end right around it.
CHANGES = [
    (NEW_YORK, TRANSITIONS[0]),
    (NEW_YORK, TRANSITIONS[1]),
    (LONDON, TRANSITIONS[2]),
    (LONDON, TRANSITIONS[3]),
    (BERLIN, TRANSITIONS[2]),
    (BERLIN, TRANSITIONS[3]),
    (LORD_HOWE, TRANSITIONS[4]),
    (LORD_HOWE, TRANSITIONS[5]),
    (CHATHAM, TRANSITIONS[6]),
    (CHATHAM, TRANSITIONS[7]),
]


def _first_reaching(wall: datetime, zone: ZoneInfo, after: datetime) -> datetime:
    """Oracle: the first whole minute from `after` at which the wall clock in `zone` shows `wall` or later
    (a skipped time is reached at the jump, a repeated time at its first showing)."""
    t = after
    while t.astimezone(zone).replace(tzinfo=None) < wall:
        t += timedelta(minutes=1)
    return t


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(CHANGES),
    st.integers(-90, 150),
    st.integers(30, 23 * 60),
    st.booleans(),
    st.integers(-20 * 60, 4 * 60),
)
def test_windows_around_clock_changes_match_a_minute_by_minute_oracle(
    change: tuple[ZoneInfo, datetime], shift: int, length: int, around_end: bool, offset: int
) -> None:
    zone, transition = change
    # The wall time at which the clock changes, read on the clock from before.
    changes_at = (transition - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None)
    changes_at += timedelta(seconds=1)
    if around_end:
        end = changes_at + timedelta(minutes=shift)
        start = end - timedelta(minutes=length)
    else:
        start = changes_at + timedelta(minutes=shift)
        end = start + timedelta(minutes=length)
    windows = {Weekday.of(start.weekday()): QuietWindow(start=start.time(), end=end.time())}
    instant = transition + timedelta(minutes=offset)

    starts = _first_reaching(start, zone, start.replace(tzinfo=UTC) - timedelta(hours=15))
    ends = _first_reaching(end, zone, starts)
    expected = ends if starts <= instant < ends else None
    assert quiet_until(instant, zone, windows) == expected
