"""The preferences history without a broker: which applied records the directory records and with what
source and time, the summary of a change in words, the table and the JSON lines of `herald preferences
history`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.preferences import (
    SOURCE_HEADER,
    Preferences,
    PreferencesChange,
    PreferenceSource,
    PreferencesUpdate,
    merge,
)
from streams.cli.consent import json_lines, summary, table
from streams.cli.preference_args import build_update
from streams.state.directory import Applied, apply_preferences, home_partition
from streams.state.history import History, source_of

PARTITIONS = 4
PREFS = "herald.preferences"
HISTORY = "herald.preferences.history"
AT = datetime(2026, 11, 30, 10, 48, 12, 439000, tzinfo=UTC)


def update(**fields: Any) -> PreferencesUpdate:
    return PreferencesUpdate.model_validate({"user_id": "ada", **fields}, strict=False)


def change(source: PreferenceSource = PreferenceSource.CLI, **fields: Any) -> PreferencesChange:
    return PreferencesChange.of(update(**fields), AT, source)


def history(source: PreferenceSource = PreferenceSource.CLI) -> History:
    return History(HISTORY, source, AT)


def apply(raw: bytes | None, current: Preferences | None, recorded: History) -> list[PreferencesChange]:
    """The history records of applying `raw` at home to `current`."""
    applied = apply_preferences(
        PREFS, b"ada", raw, home_partition("ada", PARTITIONS), PARTITIONS, current, history=recorded
    )
    assert applied.applied is Applied.APPLIED
    return [
        PreferencesChange.model_validate_json(record.value or b"")
        for record in applied.effects.records
        if record.topic == HISTORY
    ]


# --- what is recorded ------------------------------------------------------------------------------------


def test_the_source_is_the_header_and_unknown_without_one() -> None:
    assert source_of([(SOURCE_HEADER, b"cli")]) is PreferenceSource.CLI
    assert source_of({SOURCE_HEADER: b"preference_center"}) is PreferenceSource.PREFERENCE_CENTER
    assert source_of([("other", b"cli"), (SOURCE_HEADER, b"unsubscribe")]) is PreferenceSource.UNSUBSCRIBE
    assert source_of(None) is PreferenceSource.UNKNOWN
    assert source_of([(SOURCE_HEADER, b"somewhere-new")]) is PreferenceSource.UNKNOWN
    assert source_of([(SOURCE_HEADER, b"\xff")]) is PreferenceSource.UNKNOWN


def test_the_time_is_the_record_s_and_the_clock_s_without_one() -> None:
    now = AT + timedelta(hours=1)
    assert History.of(HISTORY, None, AT.timestamp(), now).at == AT
    assert History.of(HISTORY, None, None, now).at == now
    assert History.of(HISTORY, None, 0.0, now).at == now


def test_a_change_is_recorded_as_it_was_asked_for_with_its_source_and_time() -> None:
    raw = update(categories={"marketing": {"email": False}}).to_json()
    [recorded] = apply(raw, None, history())
    assert (recorded.user_id, recorded.at, recorded.source, recorded.deleted) == ("ada", AT, "cli", False)
    assert recorded.update == PreferencesUpdate.model_validate_json(raw)


def test_the_directory_s_own_restatement_of_the_whole_preferences_is_not_a_change() -> None:
    current = Preferences(user_id="ada", muted=True)
    written = apply_preferences(
        PREFS, b"ada", update(muted=True).to_json(), home_partition("ada", PARTITIONS), PARTITIONS, None
    )
    [restated] = [record for record in written.effects.records if record.topic == PREFS]
    assert apply(restated.value, current, history(PreferenceSource.UNKNOWN)) == []


def test_a_change_without_a_source_is_recorded_as_unknown() -> None:
    [recorded] = apply(update(muted=True).to_json(), None, history(PreferenceSource.UNKNOWN))
    assert recorded.source is PreferenceSource.UNKNOWN


def test_a_change_from_a_source_is_recorded_even_when_it_changes_nothing() -> None:
    # The user said it again (or the batch runs again after a failed produce, the table already changed).
    current = Preferences(user_id="ada", muted=True)
    [recorded] = apply(update(muted=True).to_json(), current, history())
    assert recorded.update.muted is True


def test_a_deletion_is_recorded_once() -> None:
    [recorded] = apply(None, Preferences(user_id="ada"), history(PreferenceSource.UNKNOWN))
    assert recorded.deleted and recorded.update.model_fields_set == {"user_id"}
    assert apply(None, None, history(PreferenceSource.UNKNOWN)) == []


def test_a_record_on_the_wrong_partition_is_recorded_where_it_is_applied_not_where_it_is_moved_from() -> None:
    wrong = (home_partition("ada", PARTITIONS) + 1) % PARTITIONS
    moved = apply_preferences(
        PREFS, b"ada", update(muted=True).to_json(), wrong, PARTITIONS, None, history=history()
    )
    assert moved.applied is Applied.REHOMED
    assert [record.topic for record in moved.effects.records] == [PREFS]


def test_without_a_history_nothing_more_is_produced() -> None:
    applied = apply_preferences(
        PREFS, b"ada", update(muted=True).to_json(), home_partition("ada", PARTITIONS), PARTITIONS, None
    )
    assert {record.topic for record in applied.effects.records} == {PREFS}


def test_a_recorded_change_keeps_its_nulls_on_the_wire() -> None:
    cleared = change(quiet_hours={"sat": None}, channels={"sms": None})
    raw = cleared.to_json()
    assert b'"sat":null' in raw and b'"muted"' not in raw
    again = PreferencesChange.model_validate_json(raw)
    assert again == cleared
    stored = Preferences.model_validate(
        {
            "user_id": "ada",
            "channels": {"sms": False},
            "quiet_hours": {"sat": {"start": "22:00", "end": "07:00"}},
        },
        strict=False,
    )
    assert merge(stored, again.update) == Preferences(user_id="ada")


# --- in words --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"muted": True}, "muted"),
        ({"muted": False}, "unmuted"),
        ({"muted": None}, "unmuted"),
        ({"categories": {"marketing": {"email": False}}}, "opted out of marketing:email"),
        ({"channels": {"sms": False}}, "opted out of *:sms"),
        ({"channels": {"sms": True}}, "opted in to *:sms"),
        ({"channels": {"sms": None}}, "back to the default: *:sms"),
        ({"channels": None}, "every channel's choice cleared"),
        ({"categories": {"marketing": None}}, "marketing's choices cleared"),
        ({"categories": None}, "every category's choices cleared"),
        ({"quiet_hours": {"sat": None, "sun": None}}, "quiet hours removed on weekend"),
        ({"quiet_hours": None}, "every quiet hour removed"),
        ({"quiet_hours": {"mon": {"start": "22:00", "end": "07:00:30"}}}, "quiet hours mon 22:00-07:00:30"),
        ({}, "nothing"),
    ],
)
def test_a_change_in_words(fields: dict[str, Any], words: str) -> None:
    assert summary(change(**fields)) == words


def test_a_change_of_several_kinds_in_words_as_the_cli_flags_give_it() -> None:
    asked = build_update(
        "ada",
        mute=True,
        opt_out=("marketing:email", "*:sms"),
        opt_in=("news:push",),
        quiet=("weekdays=22:00-07:00", "sat=23:00-09:00"),
        no_quiet=("sun",),
    )
    assert summary(PreferencesChange.of(asked, AT, PreferenceSource.CLI)) == (
        "muted; opted out of *:sms, marketing:email; opted in to news:push; "
        "quiet hours weekdays 22:00-07:00; quiet hours sat 23:00-09:00; quiet hours removed on sun"
    )


def test_a_deletion_in_words() -> None:
    deleted = PreferencesChange.of(update(), AT, PreferenceSource.UNKNOWN, deleted=True)
    assert summary(deleted) == "preferences deleted: every choice back to the default"


# --- as printed ------------------------------------------------------------------------------------------


def test_the_table_gives_time_source_and_change_in_the_order_given() -> None:
    changes = [
        change(muted=True),
        PreferencesChange.of(
            update(categories={"marketing": {"email": False}}),
            AT + timedelta(minutes=1),
            PreferenceSource.PREFERENCE_CENTER,
        ),
    ]
    assert table(changes) == (
        "time (UTC)               source             change\n"
        "2026-11-30 10:48:12.439  cli                muted\n"
        "2026-11-30 10:49:12.439  preference_center  opted out of marketing:email\n"
    )


def test_json_lines_are_the_records_as_on_the_wire() -> None:
    changes = [change(muted=True), change(channels={"sms": None})]
    lines = json_lines(changes).splitlines()
    assert [PreferencesChange.model_validate_json(line) for line in lines] == changes
