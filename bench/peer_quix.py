"""The routing peer in quixstreams: a consumer-group Application whose dataframe runs the peer job on each
event (`apply(..., expand=True)`, one row per output record) and produces each row to its own topic
(`to_topic` with a topic callback). `python -m bench.peer_quix BOOTSTRAP SOURCE EXPECTED USERS RESULT.json`,
in its own process with the worker's environment (HERALD_* names the topics, rules and templates)."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from quixstreams import Application
from quixstreams.models import Serializer, TopicConfig

from bench.peer_job import RecipientStates, RoutingJob
from kernel.settings import load_settings
from streams.effects import Record

# Tansu 0.6 holds a JoinGroup for about half the session timeout: librdkafka's 45 s default cost a 23 s join.
# 6 s (Kafka's smallest by default) joins in about 3 s.
CONSUMER_CONFIG: dict[str, Any] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


class RecordValue(Serializer):
    """A row is a Herald `Record` whose value is already encoded: produce those bytes as they are."""

    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        record: Record = args[0]  # (value, ctx)
        assert record.value is not None  # the peer job's records all carry a value
        return record.value


def run(bootstrap: str, source: str, expected: int, users: int, state_dir: Path) -> dict[str, Any]:
    settings = load_settings()
    job = RoutingJob(settings, RecipientStates(users, settings.partitions))
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"bench-peer-quix-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        loglevel=logging.WARNING,
        # Stateless: no state store, so no changelog topics; topics are the bench's, created beforehand.
        use_changelog_topics=False,
        auto_create_topics=False,
        processing_guarantee="at-least-once",
        state_dir=state_dir,  # unused (no stateful step) but created at start; its default is ./state
        consumer_extra_config=CONSUMER_CONFIG,
    )
    config = TopicConfig(num_partitions=settings.partitions, replication_factor=1)
    events = app.topic(source, key_deserializer="bytes", value_deserializer="bytes", config=config)
    outputs = {
        name: app.topic(name, key_serializer="bytes", value_serializer=RecordValue(), config=config)
        for name in job.output_topics
    }
    clock = {"first": 0.0, "last": 0.0, "cpu": 0.0}

    def route_event(value: bytes) -> list[Record]:
        if not clock["first"]:
            clock["first"], clock["cpu"] = time.monotonic(), time.process_time()
        records = job.outputs(value)
        if job.tally.events >= expected:
            clock["last"] = time.monotonic()
            app.stop()
        return records

    sdf = app.dataframe(events)
    sdf = sdf.apply(route_event, expand=True)
    sdf.to_topic(lambda value, key, timestamp, headers: outputs[value.topic], key=lambda value: value.key)
    app.run()  # returns after the final checkpoint: every output produced and flushed, offsets committed
    flushed, cpu = time.monotonic(), time.process_time() - clock["cpu"]
    return {
        "peer": "quixstreams",
        "events": job.tally.events,
        "records": job.tally.records,
        "rejected": job.tally.rejected,
        "seconds": flushed - clock["first"],
        "processing_seconds": clock["last"] - clock["first"],
        "cpu_seconds": cpu,  # the process's (librdkafka's threads too), over `seconds`
    }


def main() -> None:
    bootstrap, source, expected, users, out = sys.argv[1:6]
    result = run(bootstrap, source, int(expected), int(users), Path(out).with_suffix(".state"))
    Path(out).write_bytes(orjson.dumps(result))


if __name__ == "__main__":
    main()
