"""Which notifications a recipient already has: a per-recipient map of notification id → when, pruned to a
retention window and a size cap each time it is touched, so the table cannot grow without bound."""

from __future__ import annotations

from collections.abc import Mapping


def already_delivered(
    record: Mapping[str, float] | None, notification_id: str, now: float, retention: float
) -> bool:
    if not record:
        return False
    when = record.get(notification_id)
    return when is not None and now - when < retention


def remember(
    record: Mapping[str, float] | None, notification_id: str, now: float, retention: float, cap: int
) -> dict[str, float]:
    """The record with `notification_id` added, expired entries dropped, and at most `cap` newest kept."""
    kept = {nid: when for nid, when in (record or {}).items() if now - when < retention}
    kept[notification_id] = now
    if len(kept) > cap:
        newest = sorted(kept.items(), key=lambda item: item[1], reverse=True)[:cap]
        kept = dict(newest)
    return kept
