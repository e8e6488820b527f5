from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.channels import Channel
from schemas.preferences import Preferences, PreferencesUpdate, QuietWindow, Weekday, merge
from schemas.reasons import DecisionReason as Reason
from schemas.users import Device, Platform, UserProfile
from streams.routing.preferences import (
    SEND,
    Defer,
    Send,
    Suppress,
    decide,
    decide_for_rule,
    is_critical,
    unreachable,
)
from streams.routing.rules import RuleBook

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEVICE = Device(token="tok-1", platform=Platform.IOS)
EVERYONE = UserProfile(
    user_id="alice",
    email="alice@example.com",
    phone="+447911123456",
    devices=[DEVICE],
    timezone="Europe/London",
)
NIGHT = QuietWindow(start=time(22), end=time(7))
# A Wednesday: 23:00 in London is inside a 22:00-07:00 window.
IN_THE_NIGHT = datetime(2026, 1, 14, 23, 0, tzinfo=UTC)
AT_NOON = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)
ALL = list(Channel)


# --- the preferences document and its partial updates ---------------------------------------------


def test_preferences_parse_from_json_with_local_times() -> None:
    prefs = Preferences.model_validate_json(
        b'{"user_id": "alice", "muted": false, "channels": {"sms": false},'
        b' "categories": {"marketing": {"email": false}},'
        b' "quiet_hours": {"fri": {"start": "22:00", "end": "07:00"}}}'
    )
    assert prefs.quiet_hours[Weekday.FRI] == NIGHT
    assert not prefs.opted_in("orders", Channel.SMS)
    assert not prefs.opted_in("marketing", Channel.EMAIL)
    assert prefs.opted_in("orders", Channel.EMAIL)
    assert Preferences.model_validate_json(prefs.to_json()) == prefs


@pytest.mark.parametrize(
    "document",
    [
        b'{"user_id": "a", "quiet_hours": {"friday": {"start": "22:00", "end": "07:00"}}}',
        b'{"user_id": "a", "quiet_hours": {"fri": {"start": "22:00", "end": "22:00"}}}',
        b'{"user_id": "a", "quiet_hours": {"fri": {"start": "22:00+01:00", "end": "07:00"}}}',
        b'{"user_id": "a", "channels": {"fax": false}}',
        b'{"user_id": "a", "categories": {"Not A Category": {"email": false}}}',
        b'{"user_id": "a", "muted": "yes"}',
        b'{"user_id": "a", "volume": 3}',
    ],
)
def test_invalid_preferences_are_refused(document: bytes) -> None:
    with pytest.raises(ValidationError):
        Preferences.model_validate_json(document)


def test_a_category_choice_overrides_the_channel_choice() -> None:
    prefs = Preferences(
        user_id="a", channels={Channel.SMS: False}, categories={"security": {Channel.SMS: True}}
    )
    assert prefs.opted_in("security", Channel.SMS)
    assert not prefs.opted_in("orders", Channel.SMS)


def test_a_partial_update_merges_rather_than_erases() -> None:
    stored = Preferences(
        user_id="a",
        muted=True,
        channels={Channel.SMS: False},
        categories={"marketing": {Channel.EMAIL: False, Channel.PUSH: False}},
        quiet_hours={Weekday.FRI: NIGHT},
    )
    update = PreferencesUpdate.model_validate_json(
        b'{"user_id": "a", "categories": {"marketing": {"push": true}},'
        b' "quiet_hours": {"sat": {"start": "23:00", "end": "08:00"}}}'
    )
    merged = merge(stored, update)
    assert merged.muted is True
    assert merged.channels == {Channel.SMS: False}
    assert merged.categories == {"marketing": {Channel.EMAIL: False, Channel.PUSH: True}}
    assert set(merged.quiet_hours) == {Weekday.FRI, Weekday.SAT}


def test_nulls_clear_what_they_name() -> None:
    stored = Preferences(
        user_id="a",
        muted=True,
        channels={Channel.SMS: False, Channel.PUSH: False},
        categories={"marketing": {Channel.EMAIL: False}, "orders": {Channel.SMS: True}},
        quiet_hours={Weekday.FRI: NIGHT, Weekday.SAT: NIGHT},
    )
    update = PreferencesUpdate.model_validate_json(
        b'{"user_id": "a", "muted": null, "channels": {"sms": null},'
        b' "categories": {"marketing": null, "orders": {"sms": null}}, "quiet_hours": {"sat": null}}'
    )
    merged = merge(stored, update)
    assert merged.muted is False
    assert merged.channels == {Channel.PUSH: False}
    assert merged.categories == {}
    assert merged.quiet_hours == {Weekday.FRI: NIGHT}
    everything = merge(
        stored, PreferencesUpdate.model_validate_json(b'{"user_id": "a", "quiet_hours": null}')
    )
    assert everything.quiet_hours == {}
    assert everything.muted is True


def test_an_update_for_an_unknown_user_starts_from_the_defaults() -> None:
    merged = merge(None, PreferencesUpdate(user_id="new", muted=True))
    assert merged == Preferences(user_id="new", muted=True)


def test_an_update_for_another_user_is_refused() -> None:
    with pytest.raises(ValueError, match="another user"):
        merge(Preferences(user_id="a"), PreferencesUpdate(user_id="b", muted=True))


def test_an_update_keeps_its_nulls_on_the_wire() -> None:
    update = PreferencesUpdate.model_validate_json(b'{"user_id": "a", "quiet_hours": {"sat": null}}')
    assert update.to_json() == b'{"user_id":"a","quiet_hours":{"sat":null}}'
    assert PreferencesUpdate.model_validate_json(update.to_json()).changes() == update.changes()


# --- strategies -----------------------------------------------------------------------------------

CATEGORIES = ["orders", "marketing", "security", "password_reset"]
choices = st.dictionaries(st.sampled_from(ALL), st.booleans())
windows = st.dictionaries(
    st.sampled_from(list(Weekday)),
    st.tuples(st.integers(0, 23), st.integers(0, 23))
    .filter(lambda hours: hours[0] != hours[1])
    .map(lambda hours: QuietWindow(start=time(hours[0]), end=time(hours[1]))),
)
preferences_st = st.builds(
    Preferences,
    user_id=st.just("alice"),
    muted=st.booleans(),
    channels=choices,
    categories=st.dictionaries(st.sampled_from(CATEGORIES), choices),
    quiet_hours=windows,
)
profiles = st.builds(
    UserProfile,
    user_id=st.just("alice"),
    email=st.sampled_from([None, "alice@example.com"]),
    phone=st.sampled_from([None, "+14155550123"]),
    devices=st.sampled_from([[], [DEVICE]]),
    inapp_enabled=st.booleans(),
    timezone=st.sampled_from(
        ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Pacific/Chatham"]
    ),
)
nows = st.datetimes(
    datetime(2026, 1, 1),
    datetime(2027, 1, 1),
    timezones=st.sampled_from([UTC, ZoneInfo("Asia/Tokyo"), ZoneInfo("America/New_York")]),
    allow_imaginary=False,
)
channel_lists = st.lists(st.sampled_from(ALL), unique=True, min_size=1)
fallbacks = st.one_of(st.none(), st.lists(st.sampled_from(ALL), unique=True, min_size=1))


# --- preference resolution: properties ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(CATEGORIES),
    channel_lists,
    st.booleans(),
    profiles,
    st.one_of(st.none(), preferences_st),
    nows,
    fallbacks,
)
def test_decide_is_total_and_answers_for_every_channel(
    category: str,
    channels: list[Channel],
    critical: bool,
    profile: UserProfile,
    preferences: Preferences | None,
    now: datetime,
    fallback: list[Channel] | None,
) -> None:
    decisions = decide(
        category,
        channels,
        critical=critical,
        profile=profile,
        preferences=preferences,
        now=now,
        fallback=fallback,
    )
    assert list(decisions) == channels
    for decision in decisions.values():
        assert isinstance(decision, Send | Suppress | Defer)
        if isinstance(decision, Suppress | Defer):
            assert decision.reason in set(Reason)
        if isinstance(decision, Defer):
            assert decision.until > now
            assert decision.until.utcoffset() == timedelta(0)
            assert decision.reason is Reason.QUIET_HOURS
    if fallback:
        assert sum(not isinstance(d, Suppress) for d in decisions.values()) <= 1


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CATEGORIES), channel_lists, profiles, st.one_of(st.none(), preferences_st), nows)
def test_critical_always_sends_on_every_channel_with_an_address(
    category: str,
    channels: list[Channel],
    profile: UserProfile,
    preferences: Preferences | None,
    now: datetime,
) -> None:
    decisions = decide(category, channels, critical=True, profile=profile, preferences=preferences, now=now)
    for channel, decision in decisions.items():
        missing = unreachable(channel, profile)
        if missing is None:
            assert decision == SEND
        else:
            assert decision == Suppress(missing)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CATEGORIES), channel_lists, profiles, preferences_st, nows, fallbacks)
def test_an_opted_out_channel_never_sends_unless_critical(
    category: str,
    channels: list[Channel],
    profile: UserProfile,
    preferences: Preferences,
    now: datetime,
    fallback: list[Channel] | None,
) -> None:
    decisions = decide(
        category,
        channels,
        critical=False,
        profile=profile,
        preferences=preferences,
        now=now,
        fallback=fallback,
    )
    for channel, decision in decisions.items():
        if not preferences.opted_in(category, channel):
            assert isinstance(decision, Suppress)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CATEGORIES), channel_lists, profiles, preferences_st, nows)
def test_mute_suppresses_everything_not_critical(
    category: str, channels: list[Channel], profile: UserProfile, preferences: Preferences, now: datetime
) -> None:
    muted = preferences.model_copy(update={"muted": True})
    decisions = decide(category, channels, critical=False, profile=profile, preferences=muted, now=now)
    assert all(isinstance(d, Suppress) for d in decisions.values())
    for channel, decision in decisions.items():
        assert decision == Suppress(unreachable(channel, profile) or Reason.MUTED)


@settings(max_examples=100, deadline=None)
@given(preferences_st, st.builds(PreferencesUpdate, user_id=st.just("alice"), muted=st.booleans()))
def test_merging_is_idempotent_and_an_empty_update_changes_nothing(
    stored: Preferences, update: PreferencesUpdate
) -> None:
    assert merge(stored, PreferencesUpdate(user_id="alice")) == stored
    once = merge(stored, update)
    assert merge(once, update) == once


# --- preference resolution: examples --------------------------------------------------------------


def test_nothing_set_sends_on_every_reachable_channel() -> None:
    decisions = decide("orders", ALL, critical=False, profile=EVERYONE, preferences=None, now=AT_NOON)
    assert decisions == dict.fromkeys(ALL, SEND)


def test_unreachable_channels_say_why() -> None:
    bare = UserProfile(user_id="bob", inapp_enabled=False)
    decisions = decide("security", ALL, critical=True, profile=bare, preferences=None, now=AT_NOON)
    assert decisions == {
        Channel.INAPP: Suppress(Reason.CHANNEL_DISABLED),
        Channel.EMAIL: Suppress(Reason.NO_ADDRESS),
        Channel.PUSH: Suppress(Reason.NO_ADDRESS),
        Channel.SMS: Suppress(Reason.NO_ADDRESS),
    }


def test_quiet_hours_defer_to_the_end_of_the_window_in_the_users_timezone() -> None:
    prefs = Preferences(user_id="alice", quiet_hours=dict.fromkeys(Weekday, NIGHT))
    decisions = decide(
        "orders", [Channel.PUSH], critical=False, profile=EVERYONE, preferences=prefs, now=IN_THE_NIGHT
    )
    assert decisions == {Channel.PUSH: Defer(datetime(2026, 1, 15, 7, 0, tzinfo=UTC))}
    new_york = EVERYONE.model_copy(update={"timezone": "America/New_York"})
    # 23:00 UTC is 18:00 in New York: not quiet there.
    decisions = decide(
        "orders", [Channel.PUSH], critical=False, profile=new_york, preferences=prefs, now=IN_THE_NIGHT
    )
    assert decisions == {Channel.PUSH: SEND}


def test_suppression_comes_before_deferral() -> None:
    prefs = Preferences(
        user_id="alice", channels={Channel.SMS: False}, quiet_hours=dict.fromkeys(Weekday, NIGHT)
    )
    decisions = decide(
        "orders",
        [Channel.SMS, Channel.PUSH, Channel.EMAIL],
        critical=False,
        profile=EVERYONE,
        preferences=prefs,
        now=IN_THE_NIGHT,
    )
    assert decisions[Channel.SMS] == Suppress(Reason.OPTED_OUT)
    assert isinstance(decisions[Channel.PUSH], Defer)
    # Quiet hours hold back what buzzes a phone; email waits in an inbox anyway.
    assert decisions[Channel.EMAIL] == SEND


def test_critical_bypasses_mute_opt_out_and_quiet_hours() -> None:
    prefs = Preferences(
        user_id="alice",
        muted=True,
        categories={"security": dict.fromkeys(ALL, False)},
        quiet_hours=dict.fromkeys(Weekday, NIGHT),
    )
    decisions = decide("security", ALL, critical=True, profile=EVERYONE, preferences=prefs, now=IN_THE_NIGHT)
    assert decisions == dict.fromkeys(ALL, SEND)


def test_the_example_rules_criticality() -> None:
    book = RuleBook.from_file(EXAMPLES / "rules.yaml")
    assert is_critical(book.match("security.login"))
    assert is_critical(book.match("password.reset"))  # by its category
    assert not is_critical(book.match("order.shipped"))


def test_decide_for_rule_uses_the_rules_category_and_channels() -> None:
    book = RuleBook.from_file(EXAMPLES / "rules.yaml")
    prefs = Preferences(user_id="alice", muted=True)
    login = decide_for_rule(book.match("security.login"), EVERYONE, prefs, AT_NOON)
    assert login == {Channel.PUSH: SEND, Channel.SMS: SEND, Channel.EMAIL: SEND}
    shipped = decide_for_rule(book.match("order.shipped"), EVERYONE, prefs, AT_NOON)
    assert shipped == {Channel.INAPP: Suppress(Reason.MUTED), Channel.EMAIL: Suppress(Reason.MUTED)}


def test_fallback_takes_the_first_channel_the_user_can_and_wants_to_receive() -> None:
    prefs = Preferences(user_id="alice", categories={"orders": {Channel.PUSH: False}})
    decisions = decide(
        "orders",
        [Channel.PUSH, Channel.SMS, Channel.EMAIL],
        critical=False,
        profile=EVERYONE,
        preferences=prefs,
        now=AT_NOON,
        fallback=[Channel.PUSH, Channel.SMS, Channel.EMAIL],
    )
    assert decisions == {
        Channel.PUSH: Suppress(Reason.OPTED_OUT),
        Channel.SMS: SEND,
        Channel.EMAIL: Suppress(Reason.FALLBACK_NOT_NEEDED),
    }


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        decide("orders", ALL, critical=False, profile=EVERYONE, preferences=None, now=datetime(2026, 1, 1))
