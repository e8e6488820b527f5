"""Digests: a recipient's matching events collected over a window (or until a local time of day), then sent
as one notification whose template sees the list and its count. Pure functions over the recipient's digest
record (kept in a table partitioned by recipient); the release is a record on the scheduler. The record is
bounded whatever the events hold: every event is counted, only small ones are listed, up to a byte budget."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from kernel.errors import RecordTooLarge
from schemas.events import DomainEvent
from schemas.rules import Rule, parse_duration
from streams.routing.quiet_hours import local_to_utc
from streams.routing.rules import lookup

MAX_KEPT_EVENTS = 50  # a digest lists at most this many events; `count` still counts them all
MAX_LISTED_EVENT_BYTES = 32 * 1024  # an event larger than this (as JSON) is counted but not listed
MAX_LISTED_BYTES = 256 * 1024  # what all of a recipient's digests list, together (as JSON)
MAX_OPEN_BUCKETS = 100  # digests collecting at once per recipient; an event opening another is refused


def bucket_of(rule: Rule, event: DomainEvent) -> str:
    assert rule.digest is not None
    group = event.type
    if rule.digest.key:
        value = lookup(event.data, rule.digest.key)
        group = f"{event.type}:{value}" if isinstance(value, str | int | float) else event.type
    return f"{rule.match}|{group}"


def due_at(rule: Rule, first_seen: datetime, timezone: str) -> datetime:
    """When the bucket opened at `first_seen` is sent: after the window, or at the next `until` time."""
    assert rule.digest is not None
    if rule.digest.window is not None:
        return first_seen + timedelta(seconds=parse_duration(rule.digest.window))
    assert rule.digest.until is not None
    zone = ZoneInfo(timezone)
    local_day = first_seen.astimezone(zone).date()
    for offset in range(0, 3):
        candidate = local_to_utc(local_day + timedelta(days=offset), rule.digest.until, zone)
        if candidate > first_seen:
            return candidate.astimezone(UTC)
    raise AssertionError("a local time of day always comes round within two days")


def add(
    state: Mapping[str, Any] | None, bucket: str, rule: Rule, event: DomainEvent, now: datetime, timezone: str
) -> tuple[dict[str, Any], datetime | None]:
    """The digest record with `event` (listing its one recipient) added; and the bucket's due time if this
    event opened it (so the caller schedules its release once), else None. An event that does not fit the
    list is only counted."""
    buckets = dict(state or {})
    current = buckets.get(bucket)
    opened: datetime | None = None
    if current is None:
        if len(buckets) >= MAX_OPEN_BUCKETS:
            raise RecordTooLarge(f"the recipient has {len(buckets)} digests collecting, the most allowed")
        opened = due_at(rule, now, timezone)
        current = {
            "rule": rule.model_dump(mode="json", exclude_none=True),
            "due": opened.isoformat(),
            "count": 0,
            "events": [],
            # What the summary needs of the first event when it is not listed (its data is left out).
            "first": event.model_copy(update={"data": {}}).model_dump(mode="json", exclude_none=True),
            "listed_bytes": 0,
        }
    else:
        current = dict(current)
    events = list(current["events"])
    if len(events) < MAX_KEPT_EVENTS:
        size = len(event.to_json())
        listed = sum(listed_bytes(content) for content in buckets.values())
        if size <= MAX_LISTED_EVENT_BYTES and listed + size <= MAX_LISTED_BYTES:
            events.append(event.model_dump(mode="json", exclude_none=True))
            current["listed_bytes"] = listed_bytes(current) + size
    current["events"] = events
    current["count"] = int(current["count"]) + 1
    buckets[bucket] = current
    return buckets, opened


def listed_bytes(content: Mapping[str, Any]) -> int:
    """The JSON size of the events a bucket lists (measured here for a bucket an earlier version wrote)."""
    if "listed_bytes" in content:
        return int(content["listed_bytes"])
    return sum(len(json.dumps(item, separators=(",", ":"))) for item in content["events"])


def summary_event(
    recipient: str, bucket: str, content: Mapping[str, Any]
) -> tuple[Rule, DomainEvent, dict[str, Any]]:
    """The rule, a stand-in event (the latest one, with a digest identity) and the `digest` template value."""
    events = [DomainEvent.model_validate(e, strict=False) for e in content["events"]]
    # A bucket written by an earlier version has no "first": it listed its first event.
    first = DomainEvent.model_validate(content["first"], strict=False) if "first" in content else events[0]
    last = events[-1] if events else first
    rule = Rule.model_validate(content["rule"], strict=False).model_copy(
        update={"digest": None, "delay": None}
    )
    stand_in = DomainEvent(
        event_id=f"digest:{first.event_id}",
        type=last.type,
        occurred_at=first.occurred_at,
        recipients=[recipient],
        data=last.data,
        idempotency_key=f"digest:{bucket}:{first.dedup_key}",
        priority=last.priority,
    )
    digest = {
        "count": int(content["count"]),
        "events": [
            {"id": e.event_id, "type": e.type, "occurred_at": e.occurred_at, "data": e.data} for e in events
        ],
    }
    return rule, stand_in, digest
