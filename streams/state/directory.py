"""The user directory's steps, pure: a profile or preferences record applied to the user's stored value, as
table writes and records. Profiles and preferences are partitioned like the routed events, so each worker
holds exactly the state of the recipients it routes for."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from kernel.errors import InvalidPreferences, InvalidProfile
from schemas.base import describe_validation_error
from schemas.deadletter import DeadLetterStage
from schemas.preferences import Preferences, PreferencesUpdate, merge
from schemas.reasons import RejectReason
from schemas.users import ProfileUpdate, UserProfile
from streams.effects import REVISION, Effects, Record, Rejected, TableWrite
from streams.state.history import History

_partitioner = DefaultPartitioner()


class Applied(StrEnum):
    """What became of a state record; the agent counts it."""

    APPLIED = "applied"
    # An update that no longer holds: a bounce for a replaced address, or a merged record a later update
    # has overtaken (`Revisions`).
    SKIPPED = "skipped"
    REHOMED = "rehomed"  # on the wrong partition: forwarded to the user's own
    REJECTED = "rejected"


@dataclass
class StateChange:
    applied: Applied
    effects: Effects = field(default_factory=Effects)


# On a merged record the worker publishes: the offset of the partial update it follows (see `Revisions`).
MERGED_AFTER = "herald-merged-after"


@dataclass(frozen=True, slots=True)
class Revisions:
    """What orders a user's state records. The users and preferences topics are compacted, so after a partial
    update the worker publishes the whole merged value (what compaction keeps of a user must be whole). That
    record reaches the topic after whatever the user's services published meanwhile, and applying it then
    would undo their later update until the next merged record (an event routed in between saw the older
    profile). So a stored value keeps the offset of the record that last changed it (`REVISION`), a merged
    record names the update it follows (`MERGED_AFTER`), and one an applied update has overtaken is skipped.
    Both offsets are on the user's own partition: a record elsewhere is moved home before it is applied."""

    offset: int  # this record's
    stored: int | None = None  # the stored value's revision; None: nothing stored, or stored before them
    merged_after: int | None = None  # on a merged record: the offset of the update it follows

    @classmethod
    def of(cls, offset: int, stored: int | None, headers: Any) -> Revisions:
        return cls(offset, stored, merged_after(headers))

    @property
    def overtaken(self) -> bool:
        # Without a stored revision it is applied: a store rebuilt from the topic after compaction may have
        # kept the merged record alone, and applying a whole value that is already stored changes nothing.
        return self.merged_after is not None and self.stored is not None and self.stored > self.merged_after

    def stamp(self, value: dict[str, Any]) -> dict[str, Any]:
        value[REVISION] = self.offset
        return value

    def merged(self) -> tuple[tuple[str, bytes], ...]:
        return ((MERGED_AFTER, str(self.offset).encode()),)


def merged_after(headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None) -> int | None:
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for name, value in pairs:
        if name == MERGED_AFTER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


@functools.lru_cache(maxsize=1 << 16)
def home_partition(user_id: str, partitions: int) -> int:
    """Where Kafka's default (murmur2) partitioner puts this user: where Herald keys the user's events.
    (Remembered for the most recent users: intake asks it of every event, and murmur2 is pure Python.)"""
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
    *,
    revisions: Revisions | None = None,
) -> StateChange:
    """A users-topic record applied to the user's stored profile; with `revisions`, the stored value keeps
    its revision and a merged record an update has overtaken is skipped."""
    try:
        moved = rehome(topic, key, value, partition, partitions)
        if moved is not None:
            return StateChange(Applied.REHOMED, Effects(records=[moved]))
        assert key is not None
        user_id = key.decode(errors="replace")
        if value is None:  # a tombstone: the user is deleted
            return StateChange(Applied.APPLIED, Effects(writes=[TableWrite("users", user_id, None)]))
        update = parse_update(key, value)
        if not update.holds_for(current) or (revisions is not None and revisions.overtaken):
            return StateChange(Applied.SKIPPED)
        try:
            profile = update.apply_to(current)
        except ValidationError as exc:
            raise InvalidProfile(describe_validation_error(exc)) from None
        stored = profile.model_dump(mode="json", exclude_none=True)
        effects = Effects(
            writes=[TableWrite("users", user_id, revisions.stamp(stored) if revisions else stored)]
        )
        if not update.is_whole:
            # The users topic is compacted: only a key's newest record survives. After a partial update the
            # whole merged profile follows it, so what compaction keeps is always complete. (Applying that
            # record again changes nothing and publishes nothing.)
            effects.records.append(_merged(topic, user_id, ProfileUpdate.whole(profile), revisions))
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
    revisions: Revisions | None = None,
) -> StateChange:
    """A preferences-topic record merged into the user's stored preferences; with `history`, also recorded
    there (every source's changes come through here); with `revisions`, as for profiles."""
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
        if revisions is not None and revisions.overtaken:
            return StateChange(Applied.SKIPPED)
        try:
            merged = merge(current, update)
        except ValidationError as exc:  # before ValueError, which it is: its str() repeats the input values
            raise InvalidPreferences(describe_validation_error(exc)) from None
        except ValueError as exc:
            raise InvalidPreferences(str(exc)) from None
        stored = merged.model_dump(mode="json")
        effects = Effects(
            writes=[TableWrite("preferences", user_id, revisions.stamp(stored) if revisions else stored)]
        )
        if not update.is_whole:
            # As for profiles: what compaction keeps of a user must be whole.
            effects.records.append(_merged(topic, user_id, PreferencesUpdate.whole(merged), revisions))
        if history is not None:
            effects.records += history.records(user_id, update, changed=merged != current)
        return StateChange(Applied.APPLIED, effects)
    except (InvalidProfile, InvalidPreferences) as exc:
        return StateChange(Applied.REJECTED, Effects(rejected=[Rejected(exc, stage)]))


def _merged(
    topic: str, user_id: str, whole: ProfileUpdate | PreferencesUpdate, revisions: Revisions | None
) -> Record:
    record = Record.of(topic, user_id, whole)
    return replace(record, headers=revisions.merged()) if revisions else record
