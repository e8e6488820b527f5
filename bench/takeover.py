"""What a standby takeover is judged by (bench.standby): the probes produced and seen routed per partition,
and the changelog positions a worker's probe lines report (bench.probe); plain values, no broker."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import orjson

Changelog = tuple[str, int]  # (topic, partition)


@dataclass
class ProbeLog:
    """Each probe event as produced (its partition, when) and each time it was seen routed (time.time())."""

    produced: dict[int, tuple[int, float]] = field(default_factory=dict)  # seq -> (partition, produced at)
    seen: dict[int, list[float]] = field(default_factory=dict)  # seq -> when each routed copy was seen

    def note_produced(self, seq: int, partition: int, at: float) -> None:
        self.produced[seq] = (partition, at)

    def note_seen(self, seq: int, at: float) -> None:
        self.seen.setdefault(seq, []).append(at)

    def routed(self, partition: int) -> list[tuple[float, float]]:
        """(produced at, first seen at) of the partition's probes seen routed, in the order produced."""
        return sorted(
            (at, min(self.seen[seq]))
            for seq, (p, at) in self.produced.items()
            if p == partition and seq in self.seen
        )

    def resumed(self, killed_at: float, partitions: Iterable[int]) -> dict[int, float | None]:
        """Per partition, seconds from the kill until the first probe produced after it was seen routed
        (None: none was). The probes produced before the kill and routed late are left out: they tell when
        the backlog was replayed, not when new events flow again."""
        out: dict[int, float | None] = {}
        for partition in partitions:
            after = [seen for at, seen in self.routed(partition) if at > killed_at]
            out[partition] = min(after) - killed_at if after else None
        return out

    def first_seen_after(self, killed_at: float, partitions: Iterable[int]) -> dict[int, float | None]:
        """Per partition, seconds from the kill until any probe (replayed ones included) was seen routed."""
        out: dict[int, float | None] = {}
        for partition in partitions:
            after = [seen for _, seen in self.routed(partition) if seen > killed_at]
            out[partition] = min(after) - killed_at if after else None
        return out

    def last_seen_before(self, killed_at: float, partitions: Iterable[int]) -> dict[int, float | None]:
        """Per partition, seconds before the kill that its last probe was seen routed (None: none was)."""
        out: dict[int, float | None] = {}
        for partition in partitions:
            before = [seen for _, seen in self.routed(partition) if seen <= killed_at]
            out[partition] = killed_at - max(before) if before else None
        return out

    def longest_stall(self, since: float, partitions: Iterable[int]) -> dict[int, float]:
        """Per partition, the longest wait from `since` on without a probe being seen routed (between two
        routed probes, or from `since` to the first): how long the partition's routing stood still."""
        out: dict[int, float] = {}
        for partition in partitions:
            times = sorted(seen for _, seen in self.routed(partition) if seen > since)
            marks = [since, *times]
            out[partition] = max((b - a for a, b in pairwise(marks)), default=0.0)
        return out

    def copies_by_partition(self) -> dict[int, int]:
        """Routed copies beyond the first, per partition."""
        out: dict[int, int] = {}
        for seq, times in self.seen.items():
            if len(times) > 1 and seq in self.produced:
                partition = self.produced[seq][0]
                out[partition] = out.get(partition, 0) + len(times) - 1
        return dict(sorted(out.items()))

    def copies(self, since: float, limit: int = 40) -> list[dict[str, Any]]:
        """The first `limit` probes seen routed more than once: partition, and when produced and seen
        (seconds after `since`, the kill), to tell which worker's crash window or rebalance made them."""
        out = []
        for seq in self.duplicated()[:limit]:
            partition, at = self.produced.get(seq, (-1, since))
            seen = [round(t - since, 2) for t in sorted(self.seen[seq])]
            out.append({"seq": seq, "partition": partition, "produced": round(at - since, 2), "seen": seen})
        return out

    def figures(self, killed_at: float, moved: list[int], partitions: int) -> dict[str, Any]:
        """The takeover's figures from the probes: per partition (string keys, for JSON), seconds after the
        kill, rounded to the watch's resolution."""
        everyone = range(partitions)
        resumed = self.resumed(killed_at, moved)
        return {
            "kill_to_routing_per_partition_seconds": _rounded(resumed),
            "kill_to_routing_max_seconds": max((s for s in resumed.values() if s is not None), default=None),
            "kill_to_any_routed_per_partition_seconds": _rounded(self.first_seen_after(killed_at, moved)),
            "survivor_partitions_kill_to_routing_seconds": _rounded(
                self.resumed(killed_at, [p for p in everyone if p not in moved])
            ),
            # The survivor's own partitions stand still too while it rejoins (all its partitions are revoked).
            "longest_stall_after_kill_seconds": _rounded(self.longest_stall(killed_at, everyone)),
            "last_routed_before_kill_seconds": _rounded(self.last_seen_before(killed_at, everyone)),
            "probes_produced": len(self.produced),
            "probes_missing": len(self.missing()),
            "probes_duplicated": self.duplicates(),
            "probes_with_copies": len(self.duplicated()),
            "copies_by_partition": {str(p): n for p, n in self.copies_by_partition().items()},
            "copies": self.copies(killed_at),
        }

    def missing(self) -> list[int]:
        """Probes produced and never seen routed."""
        return sorted(seq for seq in self.produced if seq not in self.seen)

    def duplicates(self) -> int:
        """Routed copies beyond the first, over all probes."""
        return sum(len(times) - 1 for times in self.seen.values())

    def duplicated(self) -> list[int]:
        return sorted(seq for seq, times in self.seen.items() if len(times) > 1)


def _rounded(values: Mapping[int, float | None]) -> dict[str, float | None]:
    return {str(p): None if s is None else round(s, 2) for p, s in sorted(values.items())}


@dataclass(frozen=True)
class Holdings:
    """One worker's partitions as its probe last reported them: the event topic's partitions it consumes, and
    its changelog partitions with Faust's offset of the last record read in each (None: none yet), active and
    standby; and the standby replicas setting in force."""

    owned: frozenset[int]  # of the events topic
    active: Mapping[Changelog, int | None]
    standby: Mapping[Changelog, int | None]
    standby_replicas: int
    at: float  # time.time() of the probe line

    @classmethod
    def from_line(cls, line: Mapping[str, Any]) -> Holdings:
        tables = line["tables"]

        def offsets(rows: list[list[Any]]) -> dict[Changelog, int | None]:
            return {(str(topic), int(partition)): offset for topic, partition, offset in rows}

        return cls(
            owned=frozenset(int(p["p"]) for p in line.get("partitions", []) if p.get("active") is not False),
            active=offsets(tables["active"]),
            standby=offsets(tables["standby"]),
            standby_replicas=int(tables["standby_replicas"]),
            at=float(line.get("t", 0.0)),
        )

    def partitions(self, topic: str) -> set[int]:
        """Partitions of a changelog this worker holds, active or standby."""
        return {p for t, p in [*self.active, *self.standby] if t == topic}

    def partitions_active(self, topic: str) -> set[int]:
        return {p for t, p in self.active if t == topic}

    def standby_left(self, ends: Mapping[Changelog, int]) -> int:
        """Records the standbys have still to read to reach `ends` (each partition's next offset)."""
        return sum(records_left(offset, ends.get(tp, 0)) for tp, offset in self.standby.items())


def records_left(offset: int | None, end: int) -> int:
    """Records past `offset` (Faust's last record read; None or -1: none) up to `end` (the next offset)."""
    read_up_to = -1 if offset is None else max(offset, -1)
    return max(end - 1 - read_up_to, 0)


def last_holdings(text: str) -> Holdings | None:
    """The last probe line (bench.probe) that reported the tables, or None."""
    for line in reversed(text.splitlines()):
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line being written
        if isinstance(parsed, dict) and "tables" in parsed:
            return Holdings.from_line(parsed)
    return None
