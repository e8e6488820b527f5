"""Digests: a recipient's matching events collected over a window (or until a local time of day), then sent
as one notification whose template sees the list and its count. Pure functions over the recipient's digest
record (kept in a table partitioned by recipient); the release is a record on the scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from schemas.events import DomainEvent
from schemas.rules import Rule, parse_duration
from streams.routing.quiet_hours import local_to_utc
from streams.routing.rules import lookup

MAX_KEPT_EVENTS = 50  # a digest lists at most this many events; `count` still counts them all


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
    """The digest record with `event` added; and the bucket's due time if this event opened it (so the
    caller schedules its release once), else None."""
    buckets = dict(state or {})
    current = buckets.get(bucket)
    opened: datetime | None = None
    if current is None:
        opened = due_at(rule, now, timezone)
        current = {
            "rule": rule.model_dump(mode="json", exclude_none=True),
            "due": opened.isoformat(),
            "count": 0,
            "events": [],
        }
    else:
        current = dict(current)
    events = list(current["events"])
    if len(events) < MAX_KEPT_EVENTS:
        events.append(event.model_dump(mode="json", exclude_none=True))
    current["events"] = events
    current["count"] = int(current["count"]) + 1
    buckets[bucket] = current
    return buckets, opened


def summary_event(
    recipient: str, bucket: str, content: Mapping[str, Any]
) -> tuple[Rule, DomainEvent, dict[str, Any]]:
    """The rule, a stand-in event (the latest one, with a digest identity) and the `digest` template value."""
    events = [DomainEvent.model_validate(e, strict=False) for e in content["events"]]
    first, last = events[0], events[-1]
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
