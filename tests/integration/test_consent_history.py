"""`herald preferences history` on the real broker: changes made with `herald preferences set` for two users
of the same partition, recorded by the worker as it applies them, and read back for one user only, in order,
with their source and time."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.broker.embedded import free_port
from schemas.preferences import PreferencesChange
from streams.cli.consent import json_lines, read_history, summary
from streams.state.directory import home_partition
from tests.integration.stack import Stack, herald, read_topic, wait_ready

pytestmark = pytest.mark.integration

PARTITIONS = 4  # what Stack gives HERALD_PARTITIONS
ANN, BOB = "ann", "bob"
# What each `herald preferences set` asked for, in the order they were run, and its summary.
CHANGES = [
    (ANN, ["--mute"], "muted"),
    (BOB, ["--opt-out", "marketing:email"], "opted out of marketing:email"),
    (ANN, ["--opt-out", "marketing:email", "--opt-out", "*:sms"], "opted out of *:sms, marketing:email"),
    (ANN, ["--quiet", "weekdays=22:00-07:00"], "quiet hours weekdays 22:00-07:00"),
    (ANN, ["--unmute", "--opt-in", "marketing:email"], "unmuted; opted in to marketing:email"),
]


@pytest.fixture(scope="module")
def changed(stack_factory: Any) -> tuple[Stack, datetime, datetime]:
    """A worker, and the changes above made through the CLI one after the other; the times around them."""
    stack: Stack = stack_factory(HERALD_WORKER_PORT=str(free_port()))
    assert home_partition(ANN, PARTITIONS) == home_partition(BOB, PARTITIONS)  # one partition, two users
    process = stack.spawn("worker", "-l", "info", log_name="worker")
    asyncio.run(wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", process))
    before = datetime.now(UTC)
    for user, flags, _ in CHANGES:
        result = herald(stack, "preferences", "set", user, *flags)
        assert result.returncode == 0, result.stderr
    after = datetime.now(UTC)
    recorded = asyncio.run(
        read_topic(stack.bootstrap, stack.topic("preferences.history"), until=len(CHANGES), timeout=60)
    )
    assert len(recorded) == len(CHANGES), stack.log("worker")[-3000:]
    return stack, before, after


def rows(stdout: str) -> list[list[str]]:
    """The table's rows as [date, time, source, change]."""
    return [line.split(maxsplit=3) for line in stdout.splitlines()]


def test_a_user_s_changes_in_order_with_their_source(changed: tuple[Stack, datetime, datetime]) -> None:
    stack, before, after = changed
    result = herald(stack, "preferences", "history", ANN)
    assert result.returncode == 0, result.stderr
    header, *lines = rows(result.stdout)
    assert header == ["time", "(UTC)", "source", "change"]
    assert [line[2:] for line in lines] == [["cli", words] for user, _, words in CHANGES if user == ANN]
    times = [datetime.fromisoformat(f"{line[0]}T{line[1]}+00:00") for line in lines]
    assert times == sorted(times)
    assert before.replace(microsecond=0) <= times[0] and times[-1] <= after


def history(stack: Stack, user: str, since: datetime | None = None) -> list[PreferencesChange]:
    """What `herald preferences history` reads, read in this process (the CLI is run where its output or
    exit code is what is checked: each run is a new Python process of a few seconds)."""
    found = asyncio.run(read_history(stack.bootstrap, stack.topic("preferences.history"), user, since))
    return found.changes


def test_the_other_user_of_the_partition_sees_only_their_own(
    changed: tuple[Stack, datetime, datetime],
) -> None:
    stack, _, _ = changed
    changes = history(stack, BOB)
    assert [(c.source.value, summary(c)) for c in changes] == [("cli", "opted out of marketing:email")]


def test_json_lines_as_on_the_wire(changed: tuple[Stack, datetime, datetime]) -> None:
    stack, before, _ = changed
    lines = json_lines(history(stack, ANN, since=before - timedelta(hours=1)))
    records = [json.loads(line) for line in lines.splitlines()]
    assert [(r["user_id"], r["source"]) for r in records] == [(ANN, "cli")] * 4
    assert records[0]["update"] == {"user_id": ANN, "muted": True}  # as `herald preferences set` sent it
    assert records[2]["update"]["quiet_hours"]["mon"] == {"start": "22:00:00", "end": "07:00:00"}


def test_no_change_exits_with_1_and_says_where_it_looked(changed: tuple[Stack, datetime, datetime]) -> None:
    stack, _, after = changed
    nobody = herald(stack, "preferences", "history", "nobody")
    assert nobody.returncode == 1
    assert "no preference changes of nobody" in nobody.stderr and nobody.stdout == ""
    assert history(stack, ANN, since=after.replace(year=after.year + 1)) == []
