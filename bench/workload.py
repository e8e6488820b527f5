"""What the benchmark feeds Herald: users with profiles and preferences (written straight to the tables'
changelogs, which a worker recovers in bulk), one routing rule fanning out to three channels, and events."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka.partitioner import murmur2
from confluent_kafka import Producer  # type: ignore[import-untyped, unused-ignore]  # typed from 2.13 on

from schemas.preferences import Preferences
from schemas.users import UserProfile

EVENT_TYPE = "bench.fanout"
CHANNELS = ("inapp", "email", "sms")
PHONE = "+14155552671"
MARK = "bench"  # every rendered text holds "bench <seq> <sent_at>" so a provider can tell when it was sent

RULES = f"""rules:
  - match: {EVENT_TYPE}
    category: bench
    channels:
      inapp: {{template: bench}}
      email: {{template: bench}}
      sms: {{template: bench}}
"""

_STAMP = MARK + " {{ data.seq }} {{ data.sent_at }}"
TEMPLATES = {
    "inapp/title.j2": "Hello {{ recipient.name }}",
    "inapp/body.j2": _STAMP,
    "email/subject.j2": _STAMP,
    "email/text.j2": "Hello {{ recipient.name }},\n\nthis is benchmark message {{ data.seq }}.\n",
    "sms/text.j2": _STAMP,
}


def write_rules(directory: Path) -> tuple[Path, Path]:
    """The rules file and templates directory the bench worker is pointed at."""
    directory.mkdir(parents=True, exist_ok=True)
    rules = directory / "rules.yaml"
    rules.write_text(RULES)
    for name, text in TEMPLATES.items():
        path = directory / "templates" / "bench" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return rules, directory / "templates"


def parse_stamp(text: str) -> tuple[int, float] | None:
    """(seq, sent_at) from a rendered text, or None when it holds no stamp."""
    parts = text.split()
    try:
        at = parts.index(MARK)
        return int(parts[at + 1]), float(parts[at + 2])
    except (ValueError, IndexError):
        return None


def home_partition(uid: str, partitions: int) -> int:
    """Kafka's default partitioner, as Herald keys a user's events (streams.state.directory)."""
    return int(murmur2(uid.encode()) & 0x7FFFFFFF) % partitions


def user_id(index: int) -> str:
    return f"u{index}"


def _profile_template() -> dict[str, object]:
    profile = UserProfile.model_validate(
        {
            "user_id": "u0",
            "email": "u0@bench.example.com",
            "phone": PHONE,
            "locale": "en",
            "timezone": "Europe/London",
            "display_name": "User 0",
        }
    )
    return profile.model_dump(mode="json", exclude_none=True)


def _preferences_template() -> dict[str, object]:
    return Preferences(user_id="u0").model_dump(mode="json")


def table_records(users: int, partitions: int) -> Iterator[tuple[str, int, bytes, bytes]]:
    """(table, partition, key, value) as Faust's json-serialised changelogs hold them."""
    profile = _profile_template()
    preferences = _preferences_template()
    for index in range(users):
        uid = user_id(index)
        key = orjson.dumps(uid)
        partition = home_partition(uid, partitions)
        profile["user_id"] = uid
        profile["email"] = f"{uid}@bench.example.com"
        profile["display_name"] = f"User {index}"
        preferences["user_id"] = uid
        yield "users", partition, key, orjson.dumps(profile)
        yield "preferences", partition, key, orjson.dumps(preferences)


def event(seq: int, recipient: str, sent_at: float, run: str, event_type: str = EVENT_TYPE) -> bytes:
    """Event ids differ per run: runs share the delivered-ids table, which would skip a repeated id."""
    return orjson.dumps(
        {
            "schema_version": 1,
            "event_id": f"evt-{run}-{seq}",
            "type": event_type,
            "occurred_at": datetime.fromtimestamp(sent_at, UTC).isoformat(),
            "recipients": [recipient],
            "data": {"seq": seq, "sent_at": round(sent_at, 6)},
        }
    )


def fast_producer(bootstrap: str) -> Producer:
    """librdkafka, keyed records placed as Kafka's default (murmur2) partitioner places them, as the docs ask
    of services producing events (docs/WIRE-FORMATS.md): librdkafka's own default (CRC32) puts a user's
    events elsewhere than their state, and the worker routes them through one more hop."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": BENCH_PARTITIONER,
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
            "acks": "all",
        }
    )


# BENCH_PARTITIONER=consistent_random: events placed as librdkafka's default would (the extra hop).
BENCH_PARTITIONER = os.environ.get("BENCH_PARTITIONER", "murmur2_random")

Headers = list[tuple[str, bytes]]
ProducedRecord = tuple[str, int | None, bytes, bytes] | tuple[str, int | None, bytes, bytes, Headers]


def produce_all(
    producer: Producer,
    records: Iterator[ProducedRecord],
    on_progress: Callable[[int], object] = lambda n: None,
) -> int:
    """Produce every (topic, partition, key, value[, headers]) and wait until the broker acknowledged them
    all."""
    count = 0
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for record in records:
        topic, partition, key, value = record[:4]
        options: dict[str, object] = {"on_delivery": delivered}
        if partition is not None:
            options["partition"] = partition
        if len(record) == 5:
            options["headers"] = record[4]
        while True:
            try:
                producer.produce(topic, value, key, **options)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        if count % 5000 == 0:
            producer.poll(0)
            on_progress(5000)
    remaining = producer.flush(120)
    on_progress(count % 5000)
    if remaining or failures:
        raise RuntimeError(f"{remaining} records unsent, {len(failures)} refused: {failures[:3]}")
    return count


def backlog(topic: str, events: int, users: int, run: str) -> Iterator[tuple[str, int | None, bytes, bytes]]:
    now = time.time()
    for seq in range(events):
        recipient = user_id(seq % users)
        yield topic, None, recipient.encode(), event(seq, recipient, now, run)
