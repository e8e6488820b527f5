"""Which notifications a recipient already has: one delivered-ids entry per notification (recipient and
notification id → when), written once per delivery and expired by a background sweep, so that a delivery costs
the same whatever the recipient's history and the table keeps only the retention window.

Before, a recipient had one map of every id delivered to them, rewritten whole (up to a thousand ids) to the
changelog on each delivery. Such maps, left by an earlier version, are still read (a replay across the
upgrade stays a duplicate) and expire whole once their newest id is past the retention."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

# Never in a user id (schemas.events.UserId refuses control characters), so a key splits unambiguously.
SEPARATOR = "\x1f"


def entry_key(recipient: str, notification_id: str) -> str:
    return f"{recipient}{SEPARATOR}{notification_id}"


def recipient_of(key: str) -> str:
    """The recipient an entry (or an earlier version's per-recipient map, keyed by the recipient) is for."""
    return key.split(SEPARATOR, 1)[0]


def delivered_at(get: Callable[[str], Any], recipient: str, notification_id: str) -> float | None:
    """When `notification_id` was delivered to `recipient`, from the table read through `get`, or None."""
    when = get(entry_key(recipient, notification_id))
    if isinstance(when, int | float):
        return float(when)
    legacy = get(recipient)
    if isinstance(legacy, Mapping):
        earlier = legacy.get(notification_id)
        return float(earlier) if isinstance(earlier, int | float) else None
    return None


def already_delivered(when: float | None, now: float, retention: float) -> bool:
    return when is not None and now - when < retention


def is_expired(value: Any, now: float, retention: float) -> bool:
    """Whether a stored value is past the retention: an entry by its time, an earlier version's map by its
    newest id's. A value this version cannot read is left alone."""
    if isinstance(value, int | float):
        return now - value >= retention
    if isinstance(value, Mapping):
        times = [when for when in value.values() if isinstance(when, int | float)]
        return not times or now - max(times) >= retention
    return False


def expired_keys(items: Iterable[tuple[str, Any]], now: float, retention: float) -> list[str]:
    return [key for key, value in items if is_expired(value, now, retention)]
