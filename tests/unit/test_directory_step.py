"""The directory's steps without a broker: a profile or preferences record becomes writes and records."""

from __future__ import annotations

import json

from schemas.preferences import Preferences
from schemas.users import ProfileUpdate, UserProfile
from streams.effects import Record, TableWrite
from streams.state.directory import Applied, apply_preferences, apply_profile, home_partition

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
