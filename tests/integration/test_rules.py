"""Rules as data: `herald rules apply` changes routing for the next event, without a restart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.broker.embedded import free_port
from schemas.deadletter import DeadLetter
from tests.integration.stack import ROOT, Stack, produce, read_topic, wait_for_metric, wait_ready

pytestmark = pytest.mark.integration

NEW_RULES = """
rules:
  - match: "order.*"
    channels:
      inapp: {template: order_update}
  - match: invoice.paid
    when:
      - {path: amount, op: gte, value: 10}
    channels:
      inapp: {template: order_update}
"""


def herald(stack: Stack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=ROOT,
        env=stack.env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def event(event_id: str, type_: str, amount: int) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "type": type_,
            "occurred_at": "2026-11-24T10:00:00Z",
            "recipients": ["ann"],
            "data": {"order_id": event_id, "amount": amount},
        }
    ).encode()


async def inapp_titles(stack: Stack, count: int) -> list[str]:
    records: list[Any] = []
    for _ in range(30):
        records = await read_topic(stack.bootstrap, stack.topic("deliver.inapp"), until=count, timeout=1)
        if len(records) >= count:
            break
    return [json.loads(r.value)["title"] for r in records]


@pytest.fixture(scope="module")
def worker(stack_factory: Any) -> Stack:
    stack: Stack = stack_factory(HERALD_WORKER_PORT=str(free_port()))
    process = stack.spawn("worker", "-l", "info", log_name="worker")
    asyncio.run(wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", process))
    asyncio.run(produce(stack.bootstrap, stack.topic("users"), [(b"ann", b'{"user_id": "ann"}')]))
    return stack


def test_invalid_rules_are_refused_with_line_and_field(worker: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n  - match: a\n    channels: {inapp: {template: t}}\n"
        "  - match: b\n    channels: {fax: {template: t}}\n"
    )
    result = herald(worker, "rules", "apply", str(bad))
    assert result.returncode != 0
    assert (
        "nothing published" in result.stderr
        and "line 5" in result.stderr
        and "rules.1.channels" in result.stderr
    )
    missing = tmp_path / "missing.yaml"
    missing.write_text("rules:\n  - match: a\n    channels: {inapp: {template: no_such_template}}\n")
    result = herald(worker, "rules", "apply", str(missing))
    assert result.returncode != 0 and "no_such_template" in result.stderr
    listed = herald(worker, "rules", "list")
    assert "no rules published" in listed.stdout


async def test_rule_change_takes_effect_without_restart(worker: Stack, tmp_path: Path) -> None:
    await produce(worker.bootstrap, worker.topic("events"), [(b"ann", event("inv-1", "invoice.paid", 50))])
    for _ in range(30):
        letters = [
            DeadLetter.model_validate_json(r.value)
            for r in await read_topic(worker.bootstrap, worker.topic("dlq"), until=1, timeout=1)
        ]
        if letters:
            break
    assert [x.reason for x in letters] == ["no_rule"]

    rules = tmp_path / "rules.yaml"
    rules.write_text(NEW_RULES)
    applied = herald(worker, "rules", "apply", str(rules))
    assert applied.returncode == 0, applied.stderr
    listed = herald(worker, "rules", "list")
    assert "invoice.paid" in listed.stdout and "in force since offset 0" in listed.stdout

    # The worker follows the rules topic: once it reports the new ruleset, the next event is routed by it.
    await wait_for_metric(worker, "herald_rules_offset", 0)
    await produce(
        worker.bootstrap,
        worker.topic("events"),
        [(b"ann", event("inv-2", "invoice.paid", 50)), (b"ann", event("ord-1", "order.shipped", 1))],
    )
    titles = await inapp_titles(worker, 2)
    assert sorted(titles) == ["Order inv-2: invoice.paid", "Order ord-1: order.shipped"]


DELAYED = """
rules:
  - match: reminder.due
    delay: 3s
    channels:
      inapp: {template: order_update}
"""


async def test_delay_holds_the_notification_durably_until_due(worker: Stack, tmp_path: Path) -> None:
    rules = tmp_path / "delayed.yaml"
    rules.write_text(DELAYED)
    assert herald(worker, "rules", "apply", str(rules)).returncode == 0
    await wait_for_metric(worker, "herald_rules_offset", 1)
    await produce(worker.bootstrap, worker.topic("events"), [(b"ann", event("rem-1", "reminder.due", 1))])
    records: list[Any] = []
    for _ in range(30):
        records = await read_topic(worker.bootstrap, worker.topic("deliver.inapp"), until=100_000, timeout=1)
        records = [r for r in records if json.loads(r.value)["event_id"] == "rem-1"]
        if records:
            break
    [record] = records
    events = await read_topic(worker.bootstrap, worker.topic("events"), until=100_000, timeout=1)
    [produced] = [e for e in events if b"rem-1" in e.value]
    # Kafka's own timestamps: the notification reached its delivery topic at least 3 s after the event.
    assert (record.timestamp - produced.timestamp) / 1000 >= 3.0
    parked = await read_topic(worker.bootstrap, worker.topic("scheduled") + ".1s", until=100_000, timeout=1)
    assert parked, "the notification waited on the scheduler's topics, not in memory"
