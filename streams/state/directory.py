"""The user directory's steps, pure: a profile or preferences record applied to the user's stored value, as
table writes and records. Profiles and preferences are partitioned like the routed events, so each worker
holds exactly the state of the recipients it routes for."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from kernel.errors import InvalidPreferences, InvalidProfile
from schemas.base import describe_validation_error
from schemas.deadletter import DeadLetterStage
from schemas.preferences import Preferences, PreferencesUpdate, merge
from schemas.reasons import RejectReason
from schemas.users import ProfileUpdate, UserProfile
from streams.effects import Effects, Record, Rejected, TableWrite
from streams.state.history import History

_partitioner = DefaultPartitioner()


class Applied(StrEnum):
    """What became of a state record; the agent counts it."""

    APPLIED = "applied"
    SKIPPED = "skipped"  # an update that no longer holds (e.g. a bounce for a replaced address)
    REHOMED = "rehomed"  # on the wrong partition: forwarded to the user's own
    REJECTED = "rejected"


@dataclass
class StateChange:
    applied: Applied
    effects: Effects = field(default_factory=Effects)


def home_partition(user_id: str, partitions: int) -> int:
    """Where Kafka's default (murmur2) partitioner puts this user: where Herald keys the user's events."""
    every = list(range(partitions))
    return int(_partitioner(user_id.encode(), every, every))


def parse_update(key: bytes | None, raw: bytes) -> ProfileUpdate:
    try:
        update = ProfileUpdate.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidProfile(describe_validation_error(exc)) from None
    if key is not None and key.decode(errors="replace") != update.user_id:
        raise InvalidProfile(
            "message key must be the profile's user_id, so the profile meets its user's events"
        )
    return update


def parse_preferences(key: bytes, raw: bytes) -> PreferencesUpdate:
    try:
        update = PreferencesUpdate.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidPreferences(describe_validation_error(exc)) from None
    if key.decode(errors="replace") != update.user_id:
        raise InvalidPreferences("message key must be the user_id the preferences are for")
    return update


def rehome(
    topic: str, key: bytes | None, value: bytes | None, partition: int, partitions: int
) -> Record | None:
    """The record moved to its user's partition if it is elsewhere; None if it is home. A producer with
    another partitioner (librdkafka's default is not murmur2) may have put it where the user's events never
    arrive."""
    if key is None:
        raise InvalidProfile("a state record needs the user id as its key", reason=RejectReason.INVALID_KEY)
    home = home_partition(key.decode(errors="replace"), partitions)
    return None if partition == home else Record(topic, key, value, partition=home)


def apply_profile(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    partition: int,
    partitions: int,
    current: UserProfile | None,
    stage: DeadLetterStage = DeadLetterStage.DIRECTORY,
) -> StateChange:
    """A users-topic record applied to the user's stored profile."""
    try:
        moved = rehome(topic, key, value, partition, partitions)
        if moved is not None:
            return StateChange(Applied.REHOMED, Effects(records=[moved]))
        assert key is not None
        user_id = key.decode(errors="replace")
        if value is None:  # a tombstone: the user is deleted
            return StateChange(Applied.APPLIED, Effects(writes=[TableWrite("users", user_id, None)]))
        update = parse_update(key, value)
        if not update.holds_for(current):
            return StateChange(Applied.SKIPPED)
        try:
            profile = update.apply_to(current)
        except ValidationError as exc:
            raise InvalidProfile(describe_validation_error(exc)) from None
        effects = Effects(
            writes=[TableWrite("users", user_id, profile.model_dump(mode="json", exclude_none=True))]
        )
        if not update.is_whole:
            # The users topic is compacted: only a key's newest record survives. After a partial update the
            # whole merged profile follows it, so what compaction keeps is always complete. (Applying that
            # record again changes nothing and publishes nothing.)
            effects.records.append(Record.of(topic, user_id, ProfileUpdate.whole(profile)))
        return StateChange(Applied.APPLIED, effects)
    except InvalidProfile as exc:
        return StateChange(Applied.REJECTED, Effects(rejected=[Rejected(exc, stage)]))


def apply_preferences(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    partition: int,
    partitions: int,
    current: Preferences | None,
    stage: DeadLetterStage = DeadLetterStage.PREFERENCES,
    *,
    history: History | None = None,
) -> StateChange:
    """A preferences-topic record merged into the user's stored preferences; with `history`, also recorded
    there (every source's changes come through here)."""
    try:
        moved = rehome(topic, key, value, partition, partitions)
        if moved is not None:
            return StateChange(Applied.REHOMED, Effects(records=[moved]))
        assert key is not None
        user_id = key.decode(errors="replace")
        if value is None:
            effects = Effects(writes=[TableWrite("preferences", user_id, None)])
            if history is not None:
                effects.records += history.records(user_id, None, changed=current is not None)
            return StateChange(Applied.APPLIED, effects)
        update = parse_preferences(key, value)
        try:
            merged = merge(current, update)
        except ValidationError as exc:  # before ValueError, which it is: its str() repeats the input values
            raise InvalidPreferences(describe_validation_error(exc)) from None
        except ValueError as exc:
            raise InvalidPreferences(str(exc)) from None
        effects = Effects(writes=[TableWrite("preferences", user_id, merged.model_dump(mode="json"))])
        if not update.is_whole:
            # As for profiles: what compaction keeps of a user must be whole.
            effects.records.append(Record.of(topic, user_id, PreferencesUpdate.whole(merged)))
        if history is not None:
            effects.records += history.records(user_id, update, changed=merged != current)
        return StateChange(Applied.APPLIED, effects)
    except (InvalidProfile, InvalidPreferences) as exc:
        return StateChange(Applied.REJECTED, Effects(rejected=[Rejected(exc, stage)]))
