"""Turning `herald preferences set` flags into a preferences update (validated like any other)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from kernel.errors import InvalidInput
from schemas.base import describe_validation_error
from schemas.preferences import PreferencesUpdate, Weekday

_QUIET = re.compile(r"^(?P<days>[a-z,-]+)=(?P<start>\d{1,2}:\d{2}(:\d{2})?)-(?P<end>\d{1,2}:\d{2}(:\d{2})?)$")
_DAYS = [day.value for day in Weekday]
_GROUPS = {"all": _DAYS, "weekdays": _DAYS[:5], "weekend": _DAYS[5:]}


def _days(text: str) -> list[str]:
    days: list[str] = []
    for part in text.split(","):
        if part in _GROUPS:
            days += _GROUPS[part]
        elif part in _DAYS:
            days.append(part)
        else:
            raise InvalidInput(f"{part!r} is not a day (mon … sun, weekdays, weekend, all)")
    return days


def build_update(
    user_id: str,
    *,
    mute: bool | None,
    opt_out: tuple[str, ...],
    opt_in: tuple[str, ...],
    quiet: tuple[str, ...],
    no_quiet: tuple[str, ...],
) -> PreferencesUpdate:
    """`--opt-out marketing:email` (a category's channel), or `--opt-out '*:sms'` (that channel for all)."""
    document: dict[str, Any] = {"user_id": user_id}
    if mute is not None:
        document["muted"] = mute
    for choice, entries in ((False, opt_out), (True, opt_in)):
        for entry in entries:
            category, _, channel = entry.partition(":")
            if not channel:
                raise InvalidInput(f"{entry!r}: write CATEGORY:CHANNEL, or *:CHANNEL for every category")
            if category == "*":
                document.setdefault("channels", {})[channel] = choice
            else:
                document.setdefault("categories", {}).setdefault(category, {})[channel] = choice
    for entry in quiet:
        found = _QUIET.match(entry)
        if found is None:
            raise InvalidInput(f"{entry!r}: write DAYS=HH:MM-HH:MM, e.g. weekdays=22:00-07:00")
        for day in _days(found["days"]):
            document.setdefault("quiet_hours", {})[day] = {"start": found["start"], "end": found["end"]}
    for entry in no_quiet:
        for day in _days(entry):
            document.setdefault("quiet_hours", {})[day] = None
    if len(document) == 1:
        raise InvalidInput(
            "nothing to change: give --mute/--unmute, --opt-out, --opt-in, --quiet or --no-quiet"
        )
    try:
        return PreferencesUpdate.model_validate(document, strict=False)
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc)) from None
