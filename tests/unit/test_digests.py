from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import DomainEvent
from schemas.rules import Rule
from streams.routing import digests
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


KEYED = Rule.model_validate(
    {
        "match": "comment.*",
        "digest": {"window": "10m", "key": "thread"},
        "channels": {"inapp": {"template": "t"}},
    },
    strict=False,
)


def big(n: int, size: int, thread: str = "t1") -> DomainEvent:
    return event(n).model_copy(update={"data": {"thread": thread, "text": f"c{n} " + "x" * size}})


def collect(events: list[DomainEvent], rule: Rule = KEYED, state: Any = None) -> dict[str, Any]:
    for item in events:
        state, _ = add(state, bucket_of(rule, item), rule, item, NOW, "UTC")
    assert state is not None
    return state


def size(state: Any) -> int:
    return len(json.dumps(state, separators=(",", ":")))


def test_large_events_are_counted_but_not_kept_whole() -> None:
    # The review's cases: two comments of 600 kB (a digest record of 1.2 MB), 45 of 25 kB (1.1 MB), both
    # over the producer's limit; the changelog write failed and the worker stopped.
    for events in ([big(n, 600_000) for n in range(2)], [big(n, 25_000) for n in range(45)]):
        state = collect(events)
        [content] = state.values()
        assert content["count"] == len(events)
        assert size(state) < digests.MAX_LISTED_BYTES + 4096
        _, stand_in, digest = summary_event("ann", next(iter(state)), content)
        assert digest["count"] == len(events) and stand_in.event_id == "digest:e0"
        assert all(
            len(json.dumps(e, default=str)) <= digests.MAX_LISTED_EVENT_BYTES for e in digest["events"]
        )


def test_small_events_are_listed_with_what_the_template_reads() -> None:
    state = collect([big(n, 10) for n in range(3)])
    [content] = state.values()
    _, stand_in, digest = summary_event("ann", next(iter(state)), content)
    assert [e["data"]["text"] for e in digest["events"]] == [f"c{n} " + "x" * 10 for n in range(3)]
    assert [e["id"] for e in digest["events"]] == ["e0", "e1", "e2"]
    assert stand_in.data == {"thread": "t1", "text": "c2 " + "x" * 10}  # the latest listed event's data


def test_a_digest_none_of_whose_events_is_listed_still_summarizes() -> None:
    state = collect([big(n, 100_000) for n in range(1, 4)])
    [(bucket, content)] = state.items()
    assert content["events"] == []
    rule, stand_in, digest = summary_event("ann", bucket, content)
    assert digest == {"count": 3, "events": []}
    assert stand_in.event_id == "digest:e1" and stand_in.dedup_key == f"digest:{bucket}:e1"
    assert stand_in.recipients == ["ann"] and stand_in.occurred_at == NOW and rule.digest is None


def test_a_bucket_written_by_the_previous_version_is_summarized_and_added_to() -> None:
    bucket = bucket_of(WINDOW, event(1))
    whole = (
        event(1).model_copy(update={"recipients": ["ann", "bob"]}).model_dump(mode="json", exclude_none=True)
    )
    previous = {
        bucket: {
            "rule": WINDOW.model_dump(mode="json", exclude_none=True),
            "due": NOW.isoformat(),
            "count": 1,
            "events": [whole],
        }
    }
    state, opened = add(previous, bucket, WINDOW, event(2), NOW, "UTC")
    assert opened is None and state[bucket]["count"] == 2 and len(state[bucket]["events"]) == 2
    _, stand_in, digest = summary_event("ann", bucket, state[bucket])
    assert stand_in.event_id == "digest:e1" and [e["id"] for e in digest["events"]] == ["e1", "e2"]


def test_a_recipient_has_a_bounded_number_of_digests_collecting() -> None:
    events = [big(n, 10, thread=f"t{n}") for n in range(digests.MAX_OPEN_BUCKETS)]
    state = collect(events)
    assert len(state) == digests.MAX_OPEN_BUCKETS
    more = big(999, 10, thread="one-more")
    with pytest.raises(Exception) as refused:
        add(state, bucket_of(KEYED, more), KEYED, more, NOW, "UTC")
    assert getattr(refused.value, "reason", None) == "too_large"
    # An event for a digest already collecting is still taken.
    add(state, bucket_of(KEYED, events[0]), KEYED, events[0], NOW, "UTC")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 200_000), st.integers(0, digests.MAX_OPEN_BUCKETS - 1)),
        min_size=1,
        max_size=80,
    )
)
def test_the_digest_record_stays_bounded_whatever_the_events(drawn: list[tuple[int, int]]) -> None:
    state = collect([big(n, length, thread=f"t{thread}") for n, (length, thread) in enumerate(drawn)])
    assert sum(content["count"] for content in state.values()) == len(drawn)
    # What is listed, and a small envelope per digest collecting (its rule, due time, count, first event).
    assert size(state) <= digests.MAX_LISTED_BYTES + len(state) * 1024
