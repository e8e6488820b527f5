"""`herald preferences history`: every change of one user's preferences, read back from the history topic (the
pure summary and table first; the reading of the user's one partition at the end)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from adapters.broker.offsets import checked_end_offsets
from schemas.preferences import PreferencesChange, QuietWindow, Weekday
from streams.cli.topic_ranges import fetch, offsets_at
from streams.cli.trace import SEEK_SLACK
from streams.state.directory import home_partition

_DAYS = list(Weekday)
_DAY_GROUPS = {tuple(_DAYS): "every day", tuple(_DAYS[:5]): "weekdays", tuple(_DAYS[5:]): "weekend"}
_OPTED = {False: "opted out of", True: "opted in to", None: "back to the default:"}


def summary(change: PreferencesChange) -> str:
    """What a change asked for, in words: `muted; opted out of marketing:email, *:sms; quiet hours weekdays
    22:00-07:00`. A channel's choice for every category is written `*:CHANNEL`, as `--opt-out` takes it."""
    if change.deleted:
        return "preferences deleted: every choice back to the default"
    update = change.update
    sent = update.model_fields_set
    parts: list[str] = []
    if "muted" in sent:
        parts.append("muted" if update.muted else "unmuted")
    choices: dict[bool | None, list[str]] = {False: [], True: [], None: []}
    if "channels" in sent:
        if update.channels is None:
            parts.append("every channel's choice cleared")
        else:
            for channel, choice in sorted(update.channels.items()):
                choices[choice].append(f"*:{channel}")
    if "categories" in sent:
        if update.categories is None:
            parts.append("every category's choices cleared")
        else:
            for category, by_channel in sorted(update.categories.items()):
                if by_channel is None:
                    parts.append(f"{category}'s choices cleared")
                    continue
                for channel, choice in sorted(by_channel.items()):
                    choices[choice].append(f"{category}:{channel}")
    parts += [f"{_OPTED[choice]} {', '.join(entries)}" for choice, entries in choices.items() if entries]
    if "quiet_hours" in sent:
        parts += _quiet_hours(update.quiet_hours)
    return "; ".join(parts) or "nothing"


def _quiet_hours(quiet_hours: dict[Weekday, QuietWindow | None] | None) -> list[str]:
    if quiet_hours is None:
        return ["every quiet hour removed"]
    by_window: dict[str | None, list[Weekday]] = {}
    for day in _DAYS:
        if day in quiet_hours:
            window = quiet_hours[day]
            shown = None if window is None else f"{_clock(window.start)}-{_clock(window.end)}"
            by_window.setdefault(shown, []).append(day)
    return [
        f"quiet hours {_days(days)} {shown}" if shown is not None else f"quiet hours removed on {_days(days)}"
        for shown, days in by_window.items()
    ]


def _days(days: list[Weekday]) -> str:
    return _DAY_GROUPS.get(tuple(days), ",".join(days))


def _clock(moment: time) -> str:
    return moment.strftime("%H:%M:%S" if moment.second else "%H:%M")


def table(changes: Sequence[PreferencesChange]) -> str:
    """A fixed-width table, in the order the changes were applied (newest last)."""
    rows = [["time (UTC)", "source", "change"]]
    rows += [[_when(change.at), str(change.source), summary(change)] for change in changes]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    return "".join(
        f"{row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2]}".rstrip() + "\n" for row in rows
    )


def json_lines(changes: Sequence[PreferencesChange]) -> str:
    """One change per line, as it is on the wire."""
    return "".join(change.to_json().decode() + "\n" for change in changes)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass
class Found:
    """A user's changes, in the order they were applied, and how many of their records could not be read."""

    changes: list[PreferencesChange] = field(default_factory=list)
    unreadable: int = 0


async def read_history(bootstrap: list[str], topic: str, user_id: str, since: datetime | None) -> Found:
    """The user's changes on `topic` (all it keeps, or those at or after `since`): only the partition the
    user id is keyed to, from the offset of `since`, up to where it ended when the reading began."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # an offset already deleted by retention: from the oldest kept
        fetch_max_wait_ms=50,  # Tansu holds a fetch for about half its wait even when data is there
    )
    try:
        await consumer.start()
        await consumer.topics()  # refreshes the metadata
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            return Found()
        tp = TopicPartition(topic, home_partition(user_id, len(partitions)))
        consumer.assign([tp])
        consumer.pause(tp)  # fetched only once it is sought where it is needed
        end = (await checked_end_offsets(bootstrap, await consumer.end_offsets([tp])))[tp]
        start = (await consumer.beginning_offsets([tp]))[tp]
        if since is not None:
            start = max(start, (await offsets_at(consumer, since - SEEK_SLACK, {tp: end}))[tp])
        return await _read(consumer, tp, start, end, user_id, since)
    finally:
        await consumer.stop()


async def _read(
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    start: int,
    end: int,
    user_id: str,
    since: datetime | None,
) -> Found:
    found = Found()
    if start >= end:
        return found
    key = user_id.encode()
    consumer.seek(tp, start)
    consumer.resume(tp)
    while batch := await fetch(consumer, {tp: end}):
        for record in batch.get(tp, []):
            if record.offset >= end:
                return found
            if record.key != key or record.value is None:
                continue  # another user of the same partition: not worth decoding
            try:
                change = PreferencesChange.model_validate_json(record.value)
            except ValidationError:
                found.unreadable += 1
                continue
            if change.user_id == user_id and (since is None or change.at >= since):
                found.changes.append(change)
    return found
