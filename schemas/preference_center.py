"""The preference center: users change their own preferences from the app, through the gateway. The worker
that owns the user answers the gateway's `PreferencesRequest` with a `PreferencesSnapshot` (what the rules
in force offer, and the user's stored preferences); the gateway shows the user a `PreferencesView` and
writes the user's `PreferenceChanges` to the preferences topic as a `PreferencesUpdate`, as
`herald preferences set` does."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from schemas.base import WireModel
from schemas.channels import Channel
from schemas.events import UserId
from schemas.preferences import Preferences, PreferencesUpdate, QuietWindow, Weekday
from schemas.rules import Category

# Rules define a few categories each; this bounds a reply, not any real ruleset.
MAX_CATEGORIES = 1000


class PreferencesRequest(WireModel):
    """`POST /internal/preferences`: one user's snapshot, from the worker that owns the user."""

    user_id: UserId


class OfferedChannel(WireModel):
    channel: Channel
    # Every rule of the category that sends on this channel is critical: an opt-out would change nothing.
    locked: bool


class OfferedCategory(WireModel):
    """A category the rules in force define, with the channels its rules send on (in `Channel` order)."""

    category: Category
    locked: bool  # every rule of the category is critical
    channels: list[OfferedChannel]


class PreferencesSnapshot(WireModel):
    """The owner's answer: what the rules in force offer (categories by name), and the user's stored
    preferences (the defaults when none are stored)."""

    categories: Annotated[list[OfferedCategory], Field(max_length=MAX_CATEGORIES)]
    preferences: Preferences


class ChannelChoice(WireModel):
    channel: Channel
    locked: bool  # critical here: always sent, whatever the user chooses
    # Whether the category's notifications go out on this channel (unless `muted`): the user's choice for the
    # category, else for the channel in general, else yes; always yes when locked.
    enabled: bool
    choice: bool | None  # the user's own choice for this category and channel; null: none made


class CategoryChoices(WireModel):
    category: Category
    locked: bool
    channels: list[ChannelChoice]


class PreferencesView(WireModel):
    """What the user sees: `GET /preferences`, and the `preferences` frame's `preferences`."""

    muted: bool  # every notification that is not critical is held back
    channels: dict[Channel, bool]  # the user's choices per channel, for every category
    quiet_hours: dict[Weekday, QuietWindow]
    categories: list[CategoryChoices]


class PreferenceChanges(WireModel):
    """What a user changes, as `PreferencesUpdate` takes it but without `user_id` (always the token's): fields
    left out keep their value, maps merge entry by entry, a null clears what it names. A choice for a locked
    channel, or for a category or channel the rules in force do not offer, is refused."""

    muted: bool | None = None
    channels: dict[Channel, bool | None] | None = None
    categories: dict[Category, dict[Channel, bool | None] | None] | None = None
    quiet_hours: dict[Weekday, QuietWindow | None] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> PreferenceChanges:
        if not self.model_fields_set:
            raise ValueError("nothing to change: give muted, channels, categories or quiet_hours")
        return self

    def update_for(self, user_id: str) -> PreferencesUpdate:
        """The preferences record of this change for `user_id`, validated as every preferences record is."""
        changes = self.model_dump(mode="json", exclude_unset=True)
        return PreferencesUpdate.model_validate({"user_id": user_id, **changes}, strict=False)
