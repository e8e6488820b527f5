"""The scheduler's tier arithmetic, pure: which fixed-delay tier a record waits on, and the record that holds
it there. Every record of a tier waits the same time, so a partition's head is always the first due and
waiting on it never holds back a record that is due sooner."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime

from pydantic import ValidationError

from kernel.errors import InvalidEvent
from kernel.topics import SCHEDULER_TIERS_SECONDS
from schemas.base import describe_validation_error
from schemas.reasons import RejectReason
from schemas.scheduled import Scheduled
from streams.effects import Later, Record

# A record this close to its due time is released rather than sent down another tier.
DUE_TOLERANCE_SECONDS = 0.05


def tier_for(remaining_seconds: float) -> int:
    """The longest tier that does not overshoot; the shortest for what is due within a second."""
    fitting = [tier for tier in SCHEDULER_TIERS_SECONDS if tier <= remaining_seconds]
    return max(fitting) if fitting else SCHEDULER_TIERS_SECONDS[0]


def place(held: Scheduled, now: datetime, tier_topics: Mapping[int, str]) -> Record:
    """The tier record that holds `held` until it is due, keyed like its target record."""
    remaining = (held.due_at - now).total_seconds()
    return Record(tier_topics[tier_for(remaining)], held.key, held.to_json())


def hold(later: Later, now: datetime, tier_topics: Mapping[int, str]) -> Record:
    """The tier record for a step's `Later`: the target record wrapped with its due time and reason."""
    target = later.record
    held = Scheduled.wrap(later.due, target.topic, target.key or b"", target.value or b"", later.reason)
    return place(held, now, tier_topics)


def read_held(raw: bytes | None, targets: Collection[str]) -> Scheduled:
    """A tier record's content, refused unless it targets one of Herald's own topics: a record cannot be
    scheduled into an arbitrary topic."""
    try:
        held = Scheduled.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise InvalidEvent(describe_validation_error(exc), reason=RejectReason.INVALID_SCHEDULED) from None
    if held.target not in targets:
        raise InvalidEvent(
            f"{held.target!r} is not a topic records may be scheduled into",
            reason=RejectReason.INVALID_SCHEDULED,
        )
    return held


def wake_at(held: Scheduled, placed_at: float, tier_seconds: int) -> float:
    """When to look at a held record again (epoch seconds): its tier's wait is over, or it is due."""
    return min(placed_at + tier_seconds, held.due_at.timestamp())


def release(held: Scheduled, now: datetime, tier_topics: Mapping[int, str]) -> tuple[Record, bool]:
    """The target record if `held` is due (True), else the record that holds it on a shorter tier."""
    if (held.due_at - now).total_seconds() > DUE_TOLERANCE_SECONDS:
        return place(held, now, tier_topics), False
    return Record(held.target, held.key, held.value), True
