from __future__ import annotations

from datetime import UTC, datetime

from schemas.events import DomainEvent
from schemas.rules import Rule
from streams.routing.digests import MAX_KEPT_EVENTS, add, bucket_of, due_at, summary_event

WINDOW = Rule.model_validate(
    {"match": "comment.*", "digest": {"window": "10m"}, "channels": {"email": {"template": "t"}}},
    strict=False,
)
DAILY = Rule.model_validate(
    {"match": "comment.*", "digest": {"until": "09:00"}, "channels": {"email": {"template": "t"}}},
    strict=False,
)
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def event(n: int) -> DomainEvent:
    return DomainEvent(
        event_id=f"e{n}", type="comment.added", occurred_at=NOW, recipients=["ann"], data={"text": f"c{n}"}
    )


def test_window_and_daily_due_times() -> None:
    assert due_at(WINDOW, NOW, "Europe/Paris") == datetime(2026, 11, 24, 12, 10, tzinfo=UTC)
    # 09:00 in Paris (UTC+1 in November) is 08:00 UTC; at 12:00 UTC the next one is tomorrow's.
    assert due_at(DAILY, NOW, "Europe/Paris") == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    assert due_at(DAILY, datetime(2026, 11, 24, 7, 0, tzinfo=UTC), "Europe/Paris") == datetime(
        2026, 11, 24, 8, 0, tzinfo=UTC
    )


def test_only_the_first_event_opens_the_bucket_and_all_are_counted() -> None:
    bucket = bucket_of(WINDOW, event(1))
    state, opened = add(None, bucket, WINDOW, event(1), NOW, "UTC")
    assert opened == datetime(2026, 11, 24, 12, 10, tzinfo=UTC)
    for n in range(2, MAX_KEPT_EVENTS + 10):
        state, opened = add(state, bucket, WINDOW, event(n), NOW, "UTC")
        assert opened is None
    content = state[bucket]
    assert content["count"] == MAX_KEPT_EVENTS + 9 and len(content["events"]) == MAX_KEPT_EVENTS
    rule, stand_in, digest = summary_event("ann", bucket, content)
    assert rule.digest is None and digest["count"] == MAX_KEPT_EVENTS + 9
    assert stand_in.event_id == "digest:e1" and stand_in.dedup_key.startswith("digest:")


def test_digest_key_groups_by_a_data_field() -> None:
    keyed = WINDOW.model_copy(update={"digest": WINDOW.digest.model_copy(update={"key": "thread"})})  # type: ignore[union-attr]
    a = event(1).model_copy(update={"data": {"thread": "t1"}})
    b = event(2).model_copy(update={"data": {"thread": "t2"}})
    assert bucket_of(keyed, a) != bucket_of(keyed, b)
