"""The routing peers' job: Herald's own pure steps (`intake`, then `route` per routed record) over one event,
every recipient's state in memory, so a peer runs the steps Herald's agents run between the events topic and
the channel topics, without the `routed` hop (the routed record is still encoded and parsed again)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.workload import backlog, table_records
from kernel.settings import Settings, load_settings
from kernel.topics import TopicNames
from schemas.preferences import Preferences
from schemas.users import STORED, UserProfile
from streams.effects import Record
from streams.routing.intake import take
from streams.routing.rendering import TemplateStore, check_templates
from streams.routing.route import RecipientState, RoutedRecord, parse_routed, route_item
from streams.routing.rules import RuleBook


class RecipientStates:
    """The bench's users as Herald's tables hold them (the changelogs' JSON values), each parsed on first
    read and kept, as the worker's table wrapper does (`streams.runtime.tables.StateTable`)."""

    def __init__(self, users: int, partitions: int) -> None:
        self._stored: dict[str, dict[str, Any]] = {}
        for table, _, key, value in table_records(users, partitions):
            self._stored.setdefault(orjson.loads(key), {})[table] = orjson.loads(value)
        self._parsed: dict[str, RecipientState] = {}

    def __len__(self) -> int:
        return len(self._stored)

    def get(self, uid: str) -> RecipientState:
        state = self._parsed.get(uid)
        if state is None:
            stored = self._stored.get(uid, {})
            profile, preferences = stored.get("users"), stored.get("preferences")
            # As the worker's table wrapper parses a stored profile (streams.runtime.tables).
            parsed = UserProfile.model_validate(profile, strict=False, context=STORED) if profile else None
            state = RecipientState(
                uid,
                parsed,
                None if preferences is None else Preferences.model_validate(preferences, strict=False),
            )
            self._parsed[uid] = state
        return state


@dataclass
class Tally:
    events: int = 0
    records: int = 0
    rejected: int = 0  # inputs a step dead-lettered (none with the bench's workload)


@dataclass
class RoutingJob:
    """`outputs(event)`: the records Herald's intake and route agents would produce for one event (channel
    notifications and status records; held records and table writes do not arise with the bench's rule)."""

    settings: Settings
    states: RecipientStates
    tally: Tally = field(default_factory=Tally)

    def __post_init__(self) -> None:
        # As streams.bootstrap.load_rules does: the rules file, checked against the templates.
        self.templates = TemplateStore(self.settings.templates_dir)
        self.rules = RuleBook.from_file(self.settings.rules_file)
        check_templates(self.rules.rules, self.templates)
        self.topics = TopicNames.from_settings(self.settings)

    @property
    def output_topics(self) -> list[str]:
        return [*self.topics.delivery.values(), self.topics.status]

    def outputs(self, value: bytes | None) -> list[Record]:
        settings, topics = self.settings, self.topics
        self.tally.events += 1
        # Every recipient's state is here (one process holds every partition): an event for one recipient is
        # routed at once, as a worker holding its partition does; others through routed records.
        taken = take(value, self.rules, topics.routed, settings.max_recipients, here=_everywhere)
        if taken.result.effects.rejected:
            self.tally.rejected += 1
        items: list[RoutedRecord] = [taken.here] if taken.here is not None else []
        items.extend(parse_routed(routed.value) for routed in taken.result.effects.records)
        out: list[Record] = []
        now = datetime.now(UTC)
        for item in items:
            result = route_item(
                item,
                self.states.get(item.recipient),
                rules=self.rules,
                templates=self.templates,
                topics=topics,
                now=now,
                throttle_memory_seconds=settings.throttle_memory_seconds,
            )
            effects = result.effects
            if effects.rejected or effects.later or effects.writes:
                self.tally.rejected += 1  # not part of the bench's workload; counted so a report shows it
            out.extend(effects.records)
            out.extend(Record.of(topics.status, s.recipient, s) for s in effects.statuses)
        self.tally.records += len(out)
        return out


def _everywhere(recipient: str) -> bool:
    return True


def steps_alone(events: int, users: int) -> dict[str, Any]:
    """The job over the bench's events held in memory, no Kafka at all: the CPU cost of Herald's steps."""
    settings = load_settings()
    job = RoutingJob(settings, RecipientStates(users, settings.partitions))
    values = [value for _, _, _, value in backlog("-", events, users, "steps")]
    started = time.monotonic()
    for value in values:
        job.outputs(value)
    seconds = time.monotonic() - started
    return {
        "peer": "steps alone",
        "events": job.tally.events,
        "records": job.tally.records,
        "rejected": job.tally.rejected,
        "seconds": seconds,
        "processing_seconds": seconds,
    }


def main() -> None:
    """`python -m bench.peer_job EVENTS USERS RESULT.json`, with the worker's environment."""
    events, users, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    out.write_bytes(orjson.dumps(steps_alone(events, users)))


if __name__ == "__main__":
    main()
