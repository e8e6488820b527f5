"""A user's notification preferences (mute, opt-outs, quiet hours), on the compacted `herald.preferences`
topic keyed by user id, the partial update that merges into them, and the record of each change on the
`herald.preferences.history` topic."""

from __future__ import annotations

from datetime import datetime, time
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator

from schemas.base import Member, WireModel
from schemas.channels import Channel
from schemas.events import UserId
from schemas.rules import Category


class Weekday(StrEnum):
    """Days in `datetime.weekday()` order: `list(Weekday)[d.weekday()]` is the day of date `d`."""

    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @classmethod
    def of(cls, index: int) -> Weekday:
        return _WEEKDAYS[index % 7]


_WEEKDAYS: tuple[Weekday, ...] = tuple(Weekday)


class QuietWindow(WireModel):
    """Local wall-clock times in the user's timezone. The window belongs to the day it starts on: an end at
    or before the start means the next day (`fri: 22:00-07:00` runs Friday 22:00 to Saturday 07:00)."""

    start: time
    end: time

    @field_validator("start", "end")
    @classmethod
    def _local(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("a local wall-clock time, without a UTC offset (the profile gives the timezone)")
        return value.replace(fold=0)

    @model_validator(mode="after")
    def _not_empty(self) -> QuietWindow:
        # Equal ends could mean nothing or a whole day; refusing both keeps every week with some waking hours,
        # so a deferral always ends. A whole day off is what `muted` is for.
        if self.start == self.end:
            raise ValueError("start and end are equal: a window must have a length")
        return self


ChannelChoices = dict[Channel, bool]


class Preferences(WireModel):
    """What a user chose. Absent entries mean opted in. A channel's choice for a category overrides the
    user's choice for that channel in general (`channels`), which overrides the default (opted in)."""

    schema_version: Literal[1] = 1
    user_id: UserId
    muted: bool = False
    channels: ChannelChoices = Field(default_factory=dict)
    categories: dict[Category, ChannelChoices] = Field(default_factory=dict)
    quiet_hours: dict[Weekday, QuietWindow] = Field(default_factory=dict)

    def opted_in(self, category: str, channel: Channel) -> bool:
        by_category = self.categories.get(category, {})
        if channel in by_category:
            return by_category[channel]
        return self.channels.get(channel, True)


class PreferencesUpdate(WireModel):
    """A partial update. Fields left out keep their stored value; maps merge entry by entry; a null clears
    what it names back to its default (`quiet_hours: {sat: null}` removes Saturday's window,
    `categories: {marketing: null}` forgets every choice for marketing, `quiet_hours: null` removes all)."""

    schema_version: Literal[1] = 1
    user_id: UserId
    muted: bool | None = None
    channels: dict[Channel, bool | None] | None = None
    categories: dict[Category, dict[Channel, bool | None] | None] | None = None
    quiet_hours: dict[Weekday, QuietWindow | None] | None = None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)

    def to_json(self) -> bytes:
        # Nulls are meaningful here (they clear): keep what was set, as set.
        return self.model_dump_json(exclude_unset=True).encode()

    @property
    def is_whole(self) -> bool:
        """Does it state every field (safe as the last record of a key on the compacted topic)?"""
        whole = {"muted", "channels", "categories", "quiet_hours"}
        return (
            whole <= self.model_fields_set
            and not any(None in (mapping or {}).values() for mapping in (self.channels, self.quiet_hours))
            and all(
                choices is not None and None not in choices.values()
                for choices in (self.categories or {}).values()
            )
        )

    @classmethod
    def whole(cls, preferences: Preferences) -> PreferencesUpdate:
        return cls.model_validate(preferences.model_dump(mode="json"), strict=False)


def _merge_map(stored: dict[Any, Any], update: dict[Any, Any] | None) -> dict[Any, Any]:
    """Entry by entry; a null entry is removed, and a null map clears them all."""
    if update is None:
        return {}
    merged = dict(stored)
    for key, value in update.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def merge(existing: Preferences | None, update: PreferencesUpdate) -> Preferences:
    """`existing` with `update` applied (a user without stored preferences starts from the defaults)."""
    if existing is not None and existing.user_id != update.user_id:
        raise ValueError("the update is for another user")
    current = existing if existing is not None else Preferences(user_id=update.user_id)
    sent = update.model_fields_set

    muted = current.muted
    if "muted" in sent:
        muted = update.muted if update.muted is not None else False

    channels = current.channels
    if "channels" in sent:
        channels = _merge_map(current.channels, update.channels)

    categories = current.categories
    if "categories" in sent:
        if update.categories is None:
            categories = {}
        else:
            categories = dict(current.categories)
            for category, choices in update.categories.items():
                merged = _merge_map(categories.get(category, {}), choices)
                if merged:
                    categories[category] = merged
                else:
                    categories.pop(category, None)

    quiet_hours = current.quiet_hours
    if "quiet_hours" in sent:
        quiet_hours = _merge_map(current.quiet_hours, update.quiet_hours)

    return Preferences(
        user_id=current.user_id,
        muted=muted,
        channels=channels,
        categories=categories,
        quiet_hours=quiet_hours,
    )


# The header of a preferences-topic record that says where the change came from (a PreferenceSource value).
SOURCE_HEADER: Final = "herald-source"


class PreferenceSource(StrEnum):
    """Where a change of preferences came from."""

    CLI = "cli"  # `herald preferences set`
    PREFERENCE_CENTER = "preference_center"  # the user, from the app
    UNSUBSCRIBE = "unsubscribe"  # an unsubscribe link or List-Unsubscribe
    UNKNOWN = "unknown"  # a record without the header, or with a value this version does not know

    @classmethod
    def of_header(cls, value: bytes | None) -> PreferenceSource:
        try:
            return cls(value.decode()) if value is not None else cls.UNKNOWN
        except (UnicodeDecodeError, ValueError):
            return cls.UNKNOWN


class PreferencesChange(WireModel):
    """One change of a user's preferences, as it was asked for: `update` is the preferences record as sent
    (nulls included: they cleared what they name), `at` the record's time, `source` where it came from.
    `deleted`: the preferences were deleted (a tombstone), back to the defaults."""

    schema_version: Literal[1] = 1
    user_id: UserId
    at: AwareDatetime
    source: Member[PreferenceSource]
    update: PreferencesUpdate
    deleted: bool = False

    @classmethod
    def of(
        cls,
        update: PreferencesUpdate,
        at: datetime,
        source: PreferenceSource,
        *,
        deleted: bool = False,
    ) -> PreferencesChange:
        return cls(
            schema_version=1, user_id=update.user_id, at=at, source=source, update=update, deleted=deleted
        )

    def to_json(self) -> bytes:
        # As PreferencesUpdate's: the update's nulls mean something, and only what it set is written.
        return self.model_dump_json(exclude_unset=True).encode()
