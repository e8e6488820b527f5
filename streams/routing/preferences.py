"""Preference resolution: for one rule's channels and one recipient, send, suppress or defer each channel,
with the reason. Pure: the clock is a parameter, nothing is read or written."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.channels import Channel
from schemas.preferences import Preferences
from schemas.reasons import DecisionReason
from schemas.rules import Rule
from schemas.users import UserProfile
from streams.routing.quiet_hours import quiet_until

# Categories that are critical unless a rule says otherwise (`Rule.critical` left unset).
CRITICAL_CATEGORIES: frozenset[str] = frozenset({"security", "password_reset"})
# Quiet hours hold back what buzzes a phone; an email or an in-app message waits in an inbox anyway.
INTERRUPTIVE: frozenset[Channel] = frozenset({Channel.PUSH, Channel.SMS})


@dataclass(frozen=True)
class Send:
    action: Literal["send"] = "send"


@dataclass(frozen=True)
class Suppress:
    reason: DecisionReason
    action: Literal["suppress"] = "suppress"


@dataclass(frozen=True)
class Defer:
    until: datetime  # aware, UTC: deliver at this instant
    reason: DecisionReason = DecisionReason.QUIET_HOURS
    action: Literal["defer"] = "defer"


Decision = Send | Suppress | Defer

SEND = Send()


def is_critical(rule: Rule) -> bool:
    """The rule's own `critical`, else whether its category is one of CRITICAL_CATEGORIES."""
    return rule.critical if rule.critical is not None else rule.category in CRITICAL_CATEGORIES


def unreachable(channel: Channel, profile: UserProfile) -> DecisionReason | None:
    """Why the profile gives no way to reach the user on `channel`, or None when it does."""
    if channel is Channel.INAPP:
        return None if profile.inapp_enabled else DecisionReason.CHANNEL_DISABLED
    if channel is Channel.EMAIL:
        return None if profile.email else DecisionReason.NO_ADDRESS
    if channel is Channel.SMS:
        return None if profile.phone else DecisionReason.NO_ADDRESS
    return None if profile.devices else DecisionReason.NO_ADDRESS


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # Validated when the profile was stored; a zone since dropped from the tz database reads as UTC
        # rather than failing every notification for that user.
        return UTC


def decide(
    category: str,
    channels: Iterable[Channel],
    *,
    critical: bool,
    profile: UserProfile,
    preferences: Preferences | None,
    now: datetime,
    fallback: Sequence[Channel] | None = None,
) -> dict[Channel, Decision]:
    """One decision per channel, in the order given.

    A channel the profile cannot reach is suppressed whatever else holds. A critical notification is sent on
    every other channel, bypassing mute, opt-outs and quiet hours. Otherwise mute, then the opt-out for the
    category and channel, suppress; quiet hours defer to their end. With a `fallback` list only the first of
    its channels not suppressed is kept; the rest of the rule's channels are suppressed as not needed.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    prefs = preferences if preferences is not None else Preferences(user_id=profile.user_id)
    quiet_end: datetime | None = None
    if not critical and not prefs.muted and prefs.quiet_hours:
        quiet_end = quiet_until(now, _zone(profile.timezone), prefs.quiet_hours)

    decisions: dict[Channel, Decision] = {}
    for channel in channels:
        decisions[channel] = _one(channel, category, critical, profile, prefs, quiet_end)
    if fallback:
        chosen = next((c for c in fallback if not isinstance(decisions.get(c), Suppress)), None)
        for channel in decisions:
            if channel is not chosen and not isinstance(decisions[channel], Suppress):
                decisions[channel] = Suppress(DecisionReason.FALLBACK_NOT_NEEDED)
    return decisions


def decide_for_rule(
    rule: Rule, profile: UserProfile, preferences: Preferences | None, now: datetime
) -> dict[Channel, Decision]:
    """`decide` for a routing rule's category, channels, criticality and fallback."""
    return decide(
        rule.category,
        rule.channels,
        critical=is_critical(rule),
        profile=profile,
        preferences=preferences,
        now=now,
        fallback=rule.fallback,
    )


def _one(
    channel: Channel,
    category: str,
    critical: bool,
    profile: UserProfile,
    prefs: Preferences,
    quiet_end: datetime | None,
) -> Decision:
    missing = unreachable(channel, profile)
    if missing is not None:
        return Suppress(missing)
    if critical:
        return SEND
    if prefs.muted:
        return Suppress(DecisionReason.MUTED)
    if not prefs.opted_in(category, channel):
        return Suppress(DecisionReason.OPTED_OUT)
    if quiet_end is not None and channel in INTERRUPTIVE:
        return Defer(quiet_end)
    return SEND
