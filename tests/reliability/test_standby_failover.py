"""Two workers on RocksDB, each holding standbys of the other's tables (Faust's default of one standby
replica); one is killed with SIGKILL mid-stream and not restarted: the survivor takes over its partitions
from its standbys, reading only the changelogs' tails, and nothing is lost or sent twice beyond the crash
window."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from streams.state.directory import home_partition
from tests.reliability.harness import Deployment, Outputs
from tests.reliability.invariants import Expected, check, expected_notifications

EVENTS = 600
USERS = 60  # who the events go to
HELD_USERS = 1000  # profiles in the users table: a changelog worth not reading again on takeover
PARTITIONS = 4
RECORDS_READ = "herald_table_recovery_records_total"
STANDBY_LEFT = "herald_table_standby_records_left"


async def test_kill_9_one_of_two_workers_survivor_takes_over_from_standbys(
    deployment: Deployment, report: Any
) -> None:
    deployment.stack.extra_env.update(deployment.providers.env(email=False, sms=False, push=False))
    deployment.stack.extra_env |= {"HERALD_STORE": "rocksdb", "HERALD_PARTITIONS": str(PARTITIONS)}
    await asyncio.gather(*(deployment.start_worker(name) for name in ("worker-1", "worker-2")))
    users = deployment.users(HELD_USERS)
    await deployment.add_users(users, "worker-1", "worker-2")
    events = [deployment.event("order.shipped", users[n % USERS]["user_id"]) for n in range(EVENTS)]
    expected = expected_notifications(events, deployment.profiles)
    outputs = Outputs(deployment)
    started = time.monotonic()
    await deployment.publish(events)

    # Kill once about a third of the emails went out: routing, delivery and commits under way on both.
    smtp, first = deployment.providers.smtp, outputs.since["smtp"]
    for _ in range(1200):
        if len(smtp.messages) - first >= EVENTS // 3:
            break
        await asyncio.sleep(0.05)
    read_before = await by_table(deployment, "worker-1", RECORDS_READ)
    standby_left = await by_table(deployment, "worker-1", STANDBY_LEFT)
    at_kill = len(smtp.messages)
    killed_at, killed_wall = time.monotonic(), datetime.now(UTC)
    deployment.kill("worker-2")
    # Watched alone (settling re-reads every output and would blur the timings), until worker-1 has been
    # ready again for a few seconds.
    watch = Takeover(deployment, killed_at, at_kill)
    await watch.run(after_ready=5, timeout=60)
    observed = await outputs.settle(expected, timeout=120)
    await outputs.close()
    read_after = await by_table(deployment, "worker-1", RECORDS_READ)
    standby_left_after = await by_table(deployment, "worker-1", STANDBY_LEFT)

    figures = check("standby failover (kill -9)", len(events), expected, observed, crash_window=True)
    figures.faults_injected = {"sigkill": 1}
    recoveries = faust_recoveries(deployment.stack.log(deployment.log_names["worker-1"]))
    before = [r for r in recoveries if r.at < killed_wall]
    after = [r for r in recoveries if r.at >= killed_wall]
    assert before and after, "worker-1 logged no table recovery before and after the kill"
    held, takeover = before[-1], after[0]
    moved = sorted(takeover.partitions("users") - held.partitions("users"))
    emails_after_kill = {p: watch.emails_of(expected, p) for p in range(PARTITIONS)}
    first_again = {p: min(at, default=None) for p, at in emails_after_kill.items()}
    resumed = [at for p, at in first_again.items() if p in moved and at is not None]
    rebalance_at = watch.not_ready_at if watch.not_ready_at is not None else float("inf")
    users_changelog_moved = sum(takeover.highwater_count("users", p) for p in moved)
    figures.notes = {
        "emails_before_kill": at_kill - first,
        "partitions_taken_over": moved,
        "recoveries_after_kill": len(after),
        "seconds_kill_to_not_ready": watch.not_ready_at,
        "seconds_kill_to_ready_again": watch.ready_again_at,
        "seconds_kill_to_first_email_per_partition": first_again,
        # Before the survivor's rebalance: the dead worker's partitions should show none.
        "emails_between_kill_and_rebalance_per_partition": {
            p: sum(1 for at in ats if at < rebalance_at) for p, ats in emails_after_kill.items()
        },
        # The first of the dead worker's partitions to deliver again, and the last.
        "seconds_kill_to_first_email_of_taken_over_partitions": [
            min(resumed, default=None),
            max(resumed, default=None),
        ],
        "changelog_records_to_read_on_takeover_by_table": takeover.to_read_by_table(),
        "users_changelog_records_of_taken_over_partitions": users_changelog_moved,
        "standby_records_left_metric_at_kill_by_table": standby_left,
        "recovery_records_read_metric_on_takeover_by_table": {
            t: read_after.get(t, 0) - read_before.get(t, 0) for t in sorted(read_after)
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    report(figures)
    assert not figures.problems(), figures.problems()
    assert watch.ready_again_at is not None, "worker-1 was not ready again after the takeover"
    assert moved, "worker-1 took over none of worker-2's partitions"
    # From the standbys, only the tails: a takeover without them reads the moved partitions' whole users
    # changelog (no profile changes during the stream, so the tail is empty or nearly).
    assert takeover.to_read_by_table().get("users", 0) < users_changelog_moved, figures.notes
    # The standbys' own figure said as much before the kill (the moved partitions are the ones worker-1 held
    # standbys of), and the survivor, alone now, holds no standby with anything left.
    assert "users" in standby_left and standby_left["users"] < users_changelog_moved, figures.notes
    assert not any(standby_left_after.values()), standby_left_after


async def by_table(deployment: Deployment, worker: str, metric: str) -> dict[str, float]:
    """A `{table}` metric of the worker's, per table, as it reports it now."""
    values: dict[str, float] = {}
    for line in (await deployment.metrics_text(worker)).splitlines():
        if line.startswith(metric + "{"):
            table = line.split('table="', 1)[1].split('"', 1)[0]
            values[table] = values.get(table, 0) + float(line.split()[-1])
    return values


@dataclass
class Takeover:
    """Watches the survivor from the kill on: when /readyz went down and up again, and when each email was
    seen at the SMTP sink (seconds after the kill)."""

    deployment: Deployment
    killed_at: float
    seen: int
    not_ready_at: float | None = None
    ready_again_at: float | None = None
    emails: list[tuple[float, str]] = field(default_factory=list)  # (seconds after the kill, notification id)

    async def run(self, after_ready: float, timeout: float) -> None:
        smtp = self.deployment.providers.smtp
        url = self.deployment.url("worker-1", "/readyz")
        async with httpx.AsyncClient() as client:
            polls = 0
            while True:
                now = round(time.monotonic() - self.killed_at, 2)
                if now > timeout or (
                    self.ready_again_at is not None and now > self.ready_again_at + after_ready
                ):
                    return
                messages = smtp.messages
                self.emails += [(now, m["X-Herald-Notification-Id"]) for m in messages[self.seen :]]
                self.seen = len(messages)
                if self.ready_again_at is None and polls % 2 == 0:
                    try:
                        ready = (await client.get(url, timeout=1)).status_code == 200
                    except httpx.HTTPError:
                        ready = False
                    if not ready and self.not_ready_at is None:
                        self.not_ready_at = now
                    elif ready and self.not_ready_at is not None:
                        self.ready_again_at = now
                polls += 1
                await asyncio.sleep(0.1)

    def emails_of(self, expected: Mapping[str, Expected], partition: int) -> list[float]:
        """When each email to a user whose events land on `partition` was seen (seconds after the kill)."""
        return [
            at
            for at, nid in self.emails
            if nid in expected and home_partition(expected[nid].recipient, PARTITIONS) == partition
        ]


@dataclass
class Recovery:
    """One table recovery as Faust logged it: where reading began and the highwater, per changelog partition
    (Faust's conventions: the offset of the last record applied, and of the partition's last record)."""

    at: datetime
    starts: dict[tuple[str, int], int]
    highwaters: dict[tuple[str, int], int]

    def partitions(self, table: str) -> set[int]:
        return {p for t, p in self.starts if t == table}

    def highwater_count(self, table: str, partition: int) -> int:
        return max(self.highwaters.get((table, partition), -1) + 1, 0)

    def to_read_by_table(self) -> dict[str, int]:
        """Records Faust had to read (highwater minus where it began), per table."""
        left: dict[str, int] = {}
        for (table, partition), start in self.starts.items():
            highwater = self.highwaters.get((table, partition), -1)
            left[table] = left.get(table, 0) + max(highwater - max(start, -1), 0)
        return dict(sorted(left.items()))


def faust_recoveries(log: str) -> list[Recovery]:
    """Faust's recovery tables from a worker's JSON log: "Highwater for active changelog partitions", then
    "active offsets at start of reading" (in that order: faust/tables/recovery.py builds them so)."""
    recoveries: list[Recovery] = []
    highwaters: dict[tuple[str, int], int] | None = None
    for line in log.splitlines():
        if not line.startswith("{") or "faust.tables.recovery" not in line:
            continue
        record = json.loads(line)
        message = record.get("message", "")
        if "Highwater for active changelog partitions" in message:
            highwaters = dict(_table_rows(message))
        elif "active offsets at start of reading" in message and highwaters is not None:
            at = datetime.fromisoformat(record["ts"])
            recoveries.append(Recovery(at, dict(_table_rows(message)), highwaters))
            highwaters = None
    return recoveries


def _table_rows(message: str) -> Iterator[tuple[tuple[str, int], int]]:
    """((table, partition), offset) per row of one of Faust's log tables; "〃" repeats the topic above."""
    topic = ""
    for row in message.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].isdigit() or not cells[2].lstrip("-").isdigit():
            continue
        topic = topic if cells[0] == "〃" else cells[0]
        table = topic.removesuffix("-changelog").rsplit("-", 1)[-1]
        yield (table, int(cells[1])), int(cells[2])
