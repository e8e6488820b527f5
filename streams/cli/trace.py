"""`herald trace`: a notification's journey read back from the status topic, over a time range only (the
pure query, filter and table first; the reading, with timestamps turned into offsets, at the end)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from adapters.broker.offsets import checked_end_offsets
from kernel.errors import InvalidInput
from schemas.status import DeliveryStatus
from streams.cli.topic_ranges import fetch, offsets_at
from streams.state.directory import home_partition

DEFAULT_SINCE = "24h"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw])")
# A record's timestamp is when it was produced, by another clock than its status's `at` and later (a batch
# settles first, a failed produce is retried): offsets are sought from a little before --since to a little
# after --until, and what is printed is chosen by `at`.
SEEK_SLACK = timedelta(minutes=5)
NOTIFICATION_ID_SHOWN = 12  # `ntf_` and 8 hex digits: enough to tell a trace's notifications apart


def parse_duration(text: str) -> timedelta:
    """`15m`, `1h`, `2d`, `90s`, `1w`, or several together (`1h30m`)."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise InvalidInput(
            f"{text!r} is not a duration: give a number and a unit (s, m, h, d, w), e.g. 1h or 15m"
        )
    return timedelta(seconds=sum(int(number) * _UNITS[unit] for number, unit in parts))


def parse_moment(text: str, now: datetime) -> datetime:
    """A duration ago (`1h`), or a time in ISO 8601 with its UTC offset (`2026-11-30T09:00:00Z`)."""
    try:
        return now - parse_duration(text)
    except InvalidInput:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"{text!r} is neither a duration (15m, 1h, 2d) nor a time (2026-11-30T09:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{text!r} has no UTC offset: add one, e.g. {text.strip()}Z")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class TraceQuery:
    """What the support desk asks for: one event's statuses, one user's, or one user's for one event."""

    since: datetime
    until: datetime | None = None
    event_id: str | None = None
    user_id: str | None = None

    def __post_init__(self) -> None:
        if self.event_id is None and self.user_id is None:
            raise InvalidInput("give an EVENT_ID, --user USER_ID, or both")
        if self.until is not None and self.until <= self.since:
            raise InvalidInput("--until must be later than --since")

    def matches(self, status: DeliveryStatus) -> bool:
        return (
            (self.event_id is None or status.event_id == self.event_id)
            and (self.user_id is None or status.recipient == self.user_id)
            and status.at >= self.since
            and (self.until is None or status.at < self.until)
        )

    def describe(self) -> str:
        """`event ev-1 for user ann, 2026-11-29 10:00:00 to now (UTC)`."""
        subjects = [f"event {self.event_id}"] if self.event_id is not None else []
        subjects += [f"user {self.user_id}"] if self.user_id is not None else []
        until = _when(self.until) if self.until is not None else "now"
        return f"{' for '.join(subjects)}, {_when(self.since)} to {until} (UTC)"


def partitions_to_read(query: TraceQuery, partitions: int) -> list[int]:
    """A user's statuses are keyed by the user id: only the partition the producers' murmur2 partitioner
    chose for it can hold them. An event's recipients are anywhere."""
    if query.user_id is not None:
        return [home_partition(query.user_id, partitions)]
    return list(range(partitions))


def select(statuses: Iterable[DeliveryStatus], query: TraceQuery) -> list[DeliveryStatus]:
    """The statuses the query asks for, oldest first; equal times keep the order they were read in (a
    partition's order, which is the order they were written for one recipient)."""
    return sorted((status for status in statuses if query.matches(status)), key=lambda status: status.at)


def json_lines(statuses: Sequence[DeliveryStatus]) -> str:
    """One status per line, as it is on the wire."""
    return "".join(status.to_json().decode() + "\n" for status in statuses)


def table(statuses: Sequence[DeliveryStatus], query: TraceQuery) -> str:
    """A fixed-width table; the event column when tracing a user, the recipient column when tracing an event
    (a column the query fixes would say the same thing on every line)."""
    headers = ["time (UTC)"]
    headers += ["event"] if query.event_id is None else []
    headers += ["recipient"] if query.user_id is None else []
    headers += ["channel", "provider", "outcome", "attempt", "reason", "notification", "latency"]
    rows = [headers]
    for status in statuses:
        row = [_when(status.at, precise=True)]
        row += [status.event_id] if query.event_id is None else []
        row += [status.recipient] if query.user_id is None else []
        row += [
            str(status.channel),
            status.provider,
            str(status.outcome),
            str(status.attempt),
            _reason(status),
            _short(status.notification_id),
            "-" if status.latency_seconds is None else f"{status.latency_seconds:.3f}s",
        ]
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(headers))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in rows
    )


def _reason(status: DeliveryStatus) -> str:
    reason = "" if status.reason is None else str(status.reason)
    if status.provider_code is None:
        return reason or "-"
    return f"{reason} ({status.provider_code})" if reason else status.provider_code


def _short(notification_id: str) -> str:
    if len(notification_id) <= NOTIFICATION_ID_SHOWN:
        return notification_id
    return notification_id[:NOTIFICATION_ID_SHOWN] + "…"


def _when(moment: datetime, *, precise: bool = False) -> str:
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f" if precise else "%Y-%m-%d %H:%M:%S")
    return text[:-3] if precise else text


@dataclass
class Read:
    """What a trace read: the statuses it asks for, and how many records it could not decode."""

    statuses: list[DeliveryStatus]
    unreadable: int = 0


async def read_trace(bootstrap: list[str], topic: str, query: TraceQuery) -> Read:
    """The query's statuses from `topic`: only the partitions that can hold them, each only between the
    offsets of the range's times and at most to where it ended when the trace began."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # an offset already deleted by retention: from the oldest kept
        # Tansu holds a fetch for about half its wait even when data is there; the bisection fetches often.
        fetch_max_wait_ms=50,
    )
    try:
        await consumer.start()
        partitions = await _partition_count(consumer, topic)
        if partitions == 0:
            return Read([])
        chosen = [TopicPartition(topic, p) for p in partitions_to_read(query, partitions)]
        consumer.assign(chosen)
        consumer.pause(*chosen)  # each is fetched only once it is sought where it is needed
        ends = await checked_end_offsets(bootstrap, await consumer.end_offsets(chosen))
        starts = await offsets_at(consumer, query.since - SEEK_SLACK, ends)
        stops = ends if query.until is None else await offsets_at(consumer, query.until + SEEK_SLACK, ends)
        return await _read_ranges(consumer, starts, stops, query)
    finally:
        await consumer.stop()


async def _partition_count(consumer: AIOKafkaConsumer, topic: str) -> int:
    await consumer.topics()  # refreshes the metadata
    return len(consumer.partitions_for_topic(topic) or ())


async def _read_ranges(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    stops: dict[TopicPartition, int],
    query: TraceQuery,
) -> Read:
    """Every partition's records from its start to its stop, fetched together; the query's statuses."""
    reading = {tp: stop for tp, stop in stops.items() if starts[tp] < stop}
    for tp in reading:
        consumer.seek(tp, starts[tp])
    consumer.resume(*reading)
    found: list[DeliveryStatus] = []
    unreadable = 0
    key = None if query.user_id is None else query.user_id.encode()
    while batch := await fetch(consumer, reading):
        for tp, records in batch.items():
            for record in records:
                if record.offset >= reading[tp]:
                    consumer.pause(tp)  # what it fetched beyond its stop is not needed
                    break
                if record.value is None or (key is not None and record.key != key):
                    continue  # another user of the same partition: not worth decoding
                try:
                    status = DeliveryStatus.model_validate_json(record.value)
                except ValidationError:
                    unreadable += 1
                    continue
                if query.matches(status):
                    found.append(status)
    return Read(select(found, query), unreadable)
