"""The directory's steps without a broker: a profile or preferences record becomes writes and records."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from schemas.preferences import Preferences, PreferenceSource
from schemas.users import ProfileUpdate, UserProfile
from streams.effects import REVISION, Record, TableWrite
from streams.runtime.tables import StateTable, stored_preferences, stored_profile
from streams.state.directory import (
    MERGED_AFTER,
    Applied,
    Revisions,
    StateChange,
    apply_preferences,
    apply_profile,
    home_partition,
)
from streams.state.history import History

PARTITIONS = 4
USERS = "herald.users"
PREFS = "herald.preferences"


def at_home(user: str) -> int:
    return home_partition(user, PARTITIONS)


def profile(user: str = "ada", **fields: object) -> UserProfile:
    return UserProfile.model_validate({"user_id": user, "email": f"{user}@example.com", **fields})


def test_a_whole_profile_is_stored_and_nothing_is_republished() -> None:
    raw = json.dumps({"user_id": "ada", "email": "ada@example.com", "locale": "en-GB"}).encode()
    change = apply_profile(USERS, b"ada", raw, at_home("ada"), PARTITIONS, None)
    assert change.applied is Applied.APPLIED
    [write] = change.effects.writes
    assert (write.table, write.key, write.value["email"]) == ("users", "ada", "ada@example.com")


def test_a_partial_update_merges_and_the_whole_profile_follows_it_for_compaction() -> None:
    raw = json.dumps({"user_id": "ada", "locale": "fr-CA"}).encode()
    change = apply_profile(USERS, b"ada", raw, at_home("ada"), PARTITIONS, profile())
    [write] = change.effects.writes
    assert write.value["locale"] == "fr-CA" and write.value["email"] == "ada@example.com"
    [record] = change.effects.records
    assert record.topic == USERS and record.key == b"ada"
    republished = ProfileUpdate.model_validate_json(record.value or b"")
    assert republished.is_whole and republished.email == "ada@example.com"


def test_a_record_on_the_wrong_partition_is_moved_home_not_applied() -> None:
    wrong = (at_home("ada") + 1) % PARTITIONS
    change = apply_profile(USERS, b"ada", b"{}", wrong, PARTITIONS, None)
    assert change.applied is Applied.REHOMED
    assert change.effects.records == [Record(USERS, b"ada", b"{}", partition=at_home("ada"))]
    assert not change.effects.writes


def test_a_tombstone_deletes_the_user() -> None:
    change = apply_profile(USERS, b"ada", None, at_home("ada"), PARTITIONS, profile())
    assert change.effects.writes == [TableWrite("users", "ada", None)]


def test_an_update_that_no_longer_holds_is_skipped() -> None:
    raw = json.dumps({"user_id": "ada", "email": None, "if_email": "old@example.com"}).encode()
    change = apply_profile(USERS, b"ada", raw, at_home("ada"), PARTITIONS, profile())
    assert change.applied is Applied.SKIPPED and not change.effects


def test_bad_profiles_are_rejected_with_the_reason() -> None:
    keyless = apply_profile(USERS, None, b"{}", 0, PARTITIONS, None)
    assert [r.error.reason for r in keyless.effects.rejected] == ["invalid_key"]  # type: ignore[attr-defined]
    mismatched = apply_profile(USERS, b"ada", b'{"user_id": "bob"}', at_home("ada"), PARTITIONS, None)
    assert mismatched.applied is Applied.REJECTED
    [rejected] = mismatched.effects.rejected
    assert rejected.stage == "directory" and rejected.error.reason == "invalid_profile"  # type: ignore[attr-defined]
    garbage = apply_profile(USERS, b"ada", b"not json", at_home("ada"), PARTITIONS, None)
    assert garbage.applied is Applied.REJECTED and not garbage.effects.writes


def test_preferences_merge_and_a_partial_update_republishes_the_whole() -> None:
    current = Preferences.model_validate({"user_id": "ada", "channels": {"email": False}}, strict=False)
    raw = json.dumps({"user_id": "ada", "channels": {"sms": False}}).encode()
    change = apply_preferences(PREFS, b"ada", raw, at_home("ada"), PARTITIONS, current)
    [write] = change.effects.writes
    assert write.table == "preferences" and write.value["channels"] == {"email": False, "sms": False}
    [record] = change.effects.records
    assert record.topic == PREFS and b'"email":false' in (record.value or b"")


def test_bad_preferences_are_rejected_at_the_preferences_stage() -> None:
    change = apply_preferences(PREFS, b"ada", b'{"user_id": "bob"}', at_home("ada"), PARTITIONS, None)
    [rejected] = change.effects.rejected
    assert rejected.stage == "preferences" and rejected.error.reason == "invalid_preferences"  # type: ignore[attr-defined]


# One user's partition of a compacted state topic, applied in order to a table as the directory agent does:
# each record at its offset, the merged records the worker publishes appended where they land.
Log = list[tuple[bytes | None, tuple[tuple[str, bytes], ...]]]
Apply = Callable[[bytes | None, Any, Revisions], StateChange]


def replay(log: Log, table: StateTable[Any], stored: dict[str, Any], step: Apply) -> list[Any]:
    seen = []
    for offset, (value, headers) in enumerate(log):
        current, revision = table.revised("ada")
        change = step(value, current, Revisions.of(offset, revision, headers))
        for write in change.effects.writes:
            stored["ada"] = write.value
        seen.append(table.get("ada"))
    return seen


def merged(change: StateChange) -> tuple[bytes | None, tuple[tuple[str, bytes], ...]]:
    [record] = change.effects.records
    return record.value, record.headers


def test_a_merged_profile_an_update_overtook_is_skipped_so_the_profile_never_goes_back() -> None:
    # The worker applies two partial updates before the merged record of the first reaches the topic: the
    # log is P1, P2, M1, M2. Applying M1 would put the locale back to "en" until M2 arrives.
    stored: dict[str, Any] = {}
    table = StateTable(stored, stored_profile)

    def step(value: bytes | None, current: Any, revisions: Revisions) -> StateChange:
        return apply_profile(USERS, b"ada", value, at_home("ada"), PARTITIONS, current, revisions=revisions)

    p1 = json.dumps({"user_id": "ada", "display_name": "Ada"}).encode()
    p2 = json.dumps({"user_id": "ada", "locale": "fr-CA"}).encode()
    first = step(p1, None, Revisions(0))
    stored["ada"] = first.effects.writes[0].value
    second = step(p2, table.get("ada"), Revisions(1, table.revised("ada")[1]))
    assert merged(first)[1] == ((MERGED_AFTER, b"0"),) and merged(second)[1] == ((MERGED_AFTER, b"1"),)

    stored.clear()
    seen = replay([(p1, ()), (p2, ()), merged(first), merged(second)], table, stored, step)
    assert [p.locale for p in seen] == ["en", "fr-CA", "fr-CA", "fr-CA"]
    assert seen[-1].display_name == "Ada" and stored["ada"][REVISION] == 3

    # The same log without revisions (as before them): the profile goes back for a while.
    def unrevised(value: bytes | None, current: Any, _: Revisions) -> StateChange:
        return apply_profile(USERS, b"ada", value, at_home("ada"), PARTITIONS, current)

    stored.clear()
    log = [(p1, ()), (p2, ()), merged(first), merged(second)]
    assert [p.locale for p in replay(log, table, stored, unrevised)] == ["en", "fr-CA", "en", "fr-CA"]


def test_a_merged_record_is_applied_where_nothing_newer_is_stored() -> None:
    # A table rebuilt from the topic after compaction kept the merged record alone; or one stored before
    # revisions: applying a whole value is always safe there.
    whole = ProfileUpdate.whole(profile(locale="de")).to_json()
    headers = ((MERGED_AFTER, b"7"),)
    fresh = apply_profile(
        USERS, b"ada", whole, at_home("ada"), PARTITIONS, None, revisions=Revisions(9, None, 7)
    )
    assert fresh.applied is Applied.APPLIED and fresh.effects.writes[0].value[REVISION] == 9
    revisions = Revisions.of(9, None, headers)
    old = apply_profile(USERS, b"ada", whole, at_home("ada"), PARTITIONS, profile(), revisions=revisions)
    assert old.applied is Applied.APPLIED
    # Its own update applied last: the same value again.
    same = apply_profile(
        USERS, b"ada", whole, at_home("ada"), PARTITIONS, profile(locale="de"), revisions=Revisions(9, 7, 7)
    )
    assert same.applied is Applied.APPLIED and same.effects.writes[0].value["locale"] == "de"
    # A header that is not an offset is no merged record's.
    assert Revisions.of(9, 8, ((MERGED_AFTER, b"x"),)).merged_after is None


def test_a_stored_revision_is_not_part_of_the_value_read_back() -> None:
    stored = {"ada": {**profile().model_dump(mode="json"), REVISION: 12}}
    table = StateTable(stored, stored_profile)
    assert table.revised("ada") == (profile(), 12) and table.get("ada") == profile()
    assert StateTable({"ada": profile().model_dump(mode="json")}, stored_profile).revised("ada")[1] is None


def test_merged_preferences_an_update_overtook_are_skipped_and_leave_no_history() -> None:
    stored: dict[str, Any] = {}
    table = StateTable(stored, stored_preferences)

    def step(value: bytes | None, current: Any, revisions: Revisions) -> StateChange:
        return apply_preferences(
            PREFS, b"ada", value, at_home("ada"), PARTITIONS, current, revisions=revisions
        )

    p1 = json.dumps({"user_id": "ada", "channels": {"email": False}}).encode()
    p2 = json.dumps({"user_id": "ada", "channels": {"email": True}}).encode()
    first = step(p1, None, Revisions(0))
    stored["ada"] = first.effects.writes[0].value
    second = step(p2, table.get("ada"), Revisions(1, table.revised("ada")[1]))
    stored.clear()
    log = [(p1, ()), (p2, ()), merged(first), merged(second)]
    seen = replay(log, table, stored, step)
    assert [p.channels for p in seen] == [{"email": False}, {"email": True}, {"email": True}, {"email": True}]
    # Applied, it would also have written a change nobody asked for to the history.
    history = History("herald.preferences.history", PreferenceSource.UNKNOWN, datetime.now(UTC))
    value, headers = merged(first)
    unrevised = apply_preferences(
        PREFS, b"ada", value, at_home("ada"), PARTITIONS, table.get("ada"), history=history
    )
    assert [r.topic for r in unrevised.effects.records] == ["herald.preferences.history"]
    overtaken = apply_preferences(
        PREFS,
        b"ada",
        value,
        at_home("ada"),
        PARTITIONS,
        table.get("ada"),
        history=history,
        revisions=Revisions.of(4, table.revised("ada")[1], headers),
    )
    assert overtaken.applied is Applied.SKIPPED and not overtaken.effects
