"""`herald trace`'s pure parts: durations and times, the query's filter, the partition a user's statuses are
on, the order, the table and the JSON lines, and the bisection that finds an offset by time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.partitioner import murmur2

from kernel.errors import InvalidInput
from schemas.channels import Channel
from schemas.status import DeliveryStatus
from streams.cli.topic_ranges import first_offset_at
from streams.cli.trace import (
    TraceQuery,
    json_lines,
    parse_duration,
    parse_moment,
    partitions_to_read,
    select,
    table,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def status(at_minutes_ago: float, **fields: object) -> DeliveryStatus:
    values: dict[str, object] = {
        "notification_id": "ntf_0123456789abcdef0123456789abcdef",
        "event_id": "ev-1",
        "recipient": "ann",
        "channel": "email",
        "provider": "sendgrid",
        "outcome": "delivered",
        "attempt": 1,
        "at": NOW - timedelta(minutes=at_minutes_ago),
    } | fields
    values["channel"] = Channel(values["channel"])  # strict: the enum itself, as a producer holds it
    return DeliveryStatus.model_validate(values)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("90s", timedelta(seconds=90)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(minutes=90)),
        (" 24H ", timedelta(hours=24)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "1", "1x", "-1h", "1.5h", "1h 2m", "one hour"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="duration"):
        parse_duration(text)


def test_a_moment_is_a_duration_ago_or_a_time_with_its_offset() -> None:
    assert parse_moment("1h", NOW) == NOW - timedelta(hours=1)
    assert parse_moment("2026-11-30T09:00:00Z", NOW) == datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert parse_moment("2026-11-30T10:00:00+01:00", NOW) == datetime(2026, 11, 30, 9, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="no UTC offset"):
        parse_moment("2026-11-30T09:00:00", NOW)
    with pytest.raises(InvalidInput, match="neither a duration"):
        parse_moment("yesterday", NOW)


def test_a_query_needs_an_event_or_a_user_and_a_range_that_runs_forward() -> None:
    with pytest.raises(InvalidInput, match="EVENT_ID"):
        TraceQuery(since=NOW)
    with pytest.raises(InvalidInput, match="--until"):
        TraceQuery(since=NOW, until=NOW - timedelta(hours=1), event_id="ev-1")


def test_the_query_keeps_its_event_its_user_and_its_range() -> None:
    query = TraceQuery(since=NOW - timedelta(hours=1), until=NOW - timedelta(minutes=10), event_id="ev-1")
    assert query.matches(status(30))
    assert not query.matches(status(30, event_id="ev-2"))
    assert not query.matches(status(61))  # before --since
    assert not query.matches(status(5))  # after --until
    assert query.matches(status(60))  # --since is in the range, --until is not
    assert not query.matches(status(10))
    by_user = TraceQuery(since=NOW - timedelta(hours=1), user_id="ann")
    assert by_user.matches(status(30, event_id="ev-9"))
    assert not by_user.matches(status(30, recipient="bob"))
    both = TraceQuery(since=NOW - timedelta(hours=1), user_id="ann", event_id="ev-1")
    assert both.matches(status(30)) and not both.matches(status(30, recipient="bob"))


def test_a_user_is_read_on_the_partition_the_producers_put_the_user_on() -> None:
    # Kafka's default partitioner, as the Java client and aiokafka compute it: murmur2 of the key bytes.
    for user, partitions in [("ann", 8), ("bob", 8), ("user-4711", 4), ("zoë", 12)]:
        expected = (murmur2(user.encode()) & 0x7FFFFFFF) % partitions
        assert partitions_to_read(TraceQuery(since=NOW, user_id=user), partitions) == [expected]
    assert partitions_to_read(TraceQuery(since=NOW, event_id="ev-1"), 4) == [0, 1, 2, 3]


def test_statuses_are_selected_and_ordered_by_time_ties_in_the_order_read() -> None:
    query = TraceQuery(since=NOW - timedelta(hours=1), event_id="ev-1")
    failed = status(20, outcome="failed", provider="sendgrid", reason="provider_unavailable")
    delivered = status(20, outcome="delivered", provider="smtp", attempt=2)
    skipped = status(30, channel="sms", provider="-", outcome="skipped", reason="opted_out")
    other = status(25, event_id="ev-2")
    old = status(90)
    assert select([failed, delivered, other, old, skipped], query) == [skipped, failed, delivered]


def test_the_table_shows_the_journey_and_not_the_column_the_query_fixes() -> None:
    query = TraceQuery(since=NOW - timedelta(hours=1), event_id="ev-1")
    rows = [
        status(30, channel="sms", provider="-", outcome="skipped", reason="opted_out"),
        status(
            20,
            outcome="failed",
            reason="provider_unavailable",
            provider_code="503",
            latency_seconds=1.5,
        ),
        status(19.5, provider="smtp", attempt=2, latency_seconds=0.0421),
    ]
    lines = table(rows, query).splitlines()
    assert lines[0].split() == [
        "time",
        "(UTC)",
        "recipient",
        "channel",
        "provider",
        "outcome",
        "attempt",
        "reason",
        "notification",
        "latency",
    ]
    assert lines[1].split() == [
        "2026-11-30",
        "11:30:00.000",
        "ann",
        "sms",
        "-",
        "skipped",
        "1",
        "opted_out",
        "ntf_01234567…",
        "-",
    ]
    assert lines[2].split()[2:] == [
        "ann",
        "email",
        "sendgrid",
        "failed",
        "1",
        "provider_unavailable",
        "(503)",
        "ntf_01234567…",
        "1.500s",
    ]
    assert lines[3].split()[1:] == [
        "11:40:30.000",
        "ann",
        "email",
        "smtp",
        "delivered",
        "2",
        "-",
        "ntf_01234567…",
        "0.042s",
    ]
    # Columns line up: every row's outcome starts where the header's does.
    column = lines[0].index("outcome")
    assert all(line[column:].startswith(("skipped", "failed", "delivered")) for line in lines[1:])
    by_user = table(rows, TraceQuery(since=NOW - timedelta(hours=1), user_id="ann")).splitlines()
    assert by_user[0].split()[2] == "event" and "recipient" not in by_user[0]
    assert by_user[1].split()[2] == "ev-1"


def test_a_provider_code_alone_stands_for_the_reason() -> None:
    query = TraceQuery(since=NOW - timedelta(hours=1), user_id="ann")
    line = table([status(5, outcome="delivered", provider_code="250")], query).splitlines()[1]
    assert " 250 " in line


def test_json_lines_are_the_wire_format_one_per_line() -> None:
    rows = [status(30, outcome="skipped", reason="muted"), status(20, provider_message_id="m-1")]
    lines = json_lines(rows).splitlines()
    assert [DeliveryStatus.model_validate_json(line) for line in lines] == rows
    assert json.loads(lines[0]) == json.loads(rows[0].to_json())


class Partition:
    """Timestamps by offset, with gaps (offsets no record holds, like transaction markers); records what
    was asked."""

    def __init__(self, records: dict[int, int]) -> None:
        self.records = records
        self.asked: list[int] = []

    async def record_at(self, offset: int) -> tuple[int, int] | None:
        self.asked.append(offset)
        after = [o for o in sorted(self.records) if o >= offset]
        return (after[0], self.records[after[0]]) if after else None


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [(0, 0), (100, 0), (101, 1), (250, 2), (300, 2), (700, 6), (1000, 9), (1001, 10)],
)
async def test_bisection_finds_the_first_offset_at_or_after_a_time(timestamp: int, expected: int) -> None:
    partition = Partition({o: 100 * (o + 1) for o in range(10)})
    assert await first_offset_at(timestamp, 0, 10, partition.record_at) == expected
    assert len(partition.asked) <= 5  # log2(10), rounded up, and one


async def test_bisection_steps_over_gaps_and_stays_in_its_range() -> None:
    partition = Partition({0: 10, 1: 20, 5: 30, 6: 40, 9: 50})
    # Offsets 2 to 4 hold nothing: any of them is right, reading from there gives offset 5 first.
    assert await first_offset_at(25, 0, 10, partition.record_at) in {2, 3, 4, 5}
    assert await first_offset_at(45, 0, 10, partition.record_at) in {7, 8, 9}
    assert await first_offset_at(45, 0, 9, partition.record_at) in {7, 8, 9}  # none before the end
    assert await first_offset_at(15, 3, 10, partition.record_at) == 3  # 3 and 4 hold nothing: 5 is read first
