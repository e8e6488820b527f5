"""Faust's stall check on a running worker: a partition whose records no stream takes is logged as stalled
(HERALD_STREAM_STALL_SECONDS), but never a table's changelog, which the tables read, not a stream. Faust
checked every assigned partition, so each worker that wrote to its tables logged an ERROR per changelog
partition every few seconds once it had run that long (300 s by default)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from adapters.broker.embedded import free_port
from tests.integration.stack import Stack, produce, wait_ready

pytestmark = pytest.mark.integration

STALL_SECONDS = 3
STALLED = re.compile(r"Stream (has not started processing|stopped processing)|has not (been )?commit")


async def test_changelog_partitions_are_never_reported_stalled(stack_factory: Any) -> None:
    stack: Stack = stack_factory(
        HERALD_WORKER_PORT=str(free_port()), HERALD_STREAM_STALL_SECONDS=str(STALL_SECONDS)
    )
    process = stack.spawn("worker", "-l", "info", log_name="worker")
    await wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", process)
    # Table writes after recovery: each user's profile goes to the users changelog, past where recovery left
    # the worker's own position on it.
    profiles = [{"user_id": f"stall-{n}", "email": f"stall-{n}@example.com"} for n in range(40)]
    await produce(
        stack.bootstrap,
        stack.topic("users"),
        [(p["user_id"].encode(), json.dumps(p).encode()) for p in profiles],
    )
    await asyncio.sleep(4 * STALL_SECONDS)
    assert process.poll() is None, "the worker stopped"
    stalled = [line for line in stack.log("worker").splitlines() if STALLED.search(line)]
    assert not [line for line in stalled if "-changelog" in line], stalled[:3]
