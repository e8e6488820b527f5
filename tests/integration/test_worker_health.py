"""The worker's health endpoints: alive at once, ready only once it has partitions and its tables."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from adapters.broker.embedded import free_port
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


async def test_not_ready_before_partitions_are_assigned_then_ready(stack_factory: Any) -> None:
    stack: Stack = stack_factory(HERALD_WORKER_PORT=str(free_port()))
    process = stack.spawn("worker", "-l", "info", log_name="worker")
    base = f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}"
    seen: list[tuple[int, str]] = []
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = await client.get(f"{base}/healthz", timeout=1)
                ready = await client.get(f"{base}/readyz", timeout=1)
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
                continue
            assert health.status_code == 200
            seen.append((ready.status_code, ready.json()["reason"]))
            if ready.status_code == 200:
                break
            await asyncio.sleep(0.1)
    statuses = [code for code, _ in seen]
    assert 503 in statuses, f"the worker answered ready before it had joined its group: {seen}"
    assert statuses[-1] == 200
    waiting = {reason for code, reason in seen if code == 503}
    assert waiting <= {
        "starting",
        "no partitions assigned yet",
        "rebalancing",
        "recovering",
        "rules topic not read yet",
    }
