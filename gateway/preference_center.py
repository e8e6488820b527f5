"""The preference center as the gateway serves it, to sockets and HTTP alike: a user's view, built from what
the owning worker says the rules in force offer and the user has stored, and changes checked against those
rules, then written to the preferences topic. The user is always the token's: nothing a client sends names
one."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.metrics import GatewayMetrics
from gateway.owner import Owner
from gateway.preferences_writer import PreferencesWriter
from kernel.errors import PreferencesRefused
from schemas.preference_center import (
    CategoryChoices,
    ChannelChoice,
    OfferedCategory,
    PreferenceChanges,
    PreferencesRequest,
    PreferencesSnapshot,
    PreferencesView,
)
from schemas.preferences import Preferences, merge
from schemas.websocket import ErrorCode


def view(offered: Sequence[OfferedCategory], preferences: Preferences) -> PreferencesView:
    """Each offered category and channel with the user's choice and whether it is sent (as routing decides
    it, mute and quiet hours aside: those are shown as they are)."""
    categories = []
    for category in offered:
        own = preferences.categories.get(category.category, {})
        channels = [
            ChannelChoice(
                channel=channel.channel,
                locked=channel.locked,
                enabled=channel.locked or preferences.opted_in(category.category, channel.channel),
                choice=own.get(channel.channel),
            )
            for channel in category.channels
        ]
        categories.append(
            CategoryChoices(category=category.category, locked=category.locked, channels=channels)
        )
    return PreferencesView(
        muted=preferences.muted,
        channels=dict(preferences.channels),
        quiet_hours=dict(preferences.quiet_hours),
        categories=categories,
    )


def refusal(changes: PreferenceChanges, offered: Sequence[OfferedCategory]) -> PreferencesRefused | None:
    """Why the rules in force do not allow `changes`, or None. A choice for a locked channel is refused (it is
    sent whatever the choice), and so is one for a category or channel no rule offers. Clearing a choice
    (null, stale ones too), muting and choices per channel are allowed: critical notifications ignore them."""
    channels = {(c.category, o.channel): o.locked for c in offered for o in c.channels}
    locked: list[str] = []
    unknown: list[str] = []
    for category, choices in (changes.categories or {}).items():
        for channel, choice in (choices or {}).items():
            if choice is None:
                continue
            pair = f"{category}:{channel.value}"
            if (category, channel) not in channels:
                unknown.append(pair)
            elif channels[category, channel]:
                locked.append(pair)
    if locked:
        return PreferencesRefused(
            ErrorCode.LOCKED.value,
            "critical notifications are always sent; these cannot be changed: " + ", ".join(locked),
            locked,
        )
    if unknown:
        return PreferencesRefused(
            ErrorCode.NOT_OFFERED.value,
            "the rules in force send no notifications here: " + ", ".join(unknown),
            unknown,
        )
    return None


class PreferenceCenter:
    """Reads from the owner of the user's partition; writes to the preferences topic (PreferencesUnavailable
    when either fails, PreferencesRefused for a change the rules do not allow)."""

    def __init__(self, owner: Owner, writer: PreferencesWriter, metrics: GatewayMetrics) -> None:
        self._owner = owner
        self._writer = writer
        self._metrics = metrics

    async def _snapshot(self, user_id: str) -> PreferencesSnapshot:
        return await self._owner.preferences(PreferencesRequest(user_id=user_id))

    async def view(self, user_id: str) -> PreferencesView:
        snapshot = await self._snapshot(user_id)
        return view(snapshot.categories, snapshot.preferences)

    async def change(self, user_id: str, changes: PreferenceChanges) -> PreferencesView:
        """Write the change once it is allowed; the view with it applied. The owner applies it in order with
        every other change of the user's (the CLI's, an unsubscribe) within its batch window."""
        snapshot = await self._snapshot(user_id)
        refused = refusal(changes, snapshot.categories)
        if refused is not None:
            raise refused
        update = changes.update_for(user_id)
        await self._writer.write(update)
        self._metrics.preference_changes.inc()
        return view(snapshot.categories, merge(snapshot.preferences, update))
