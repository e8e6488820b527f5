"""WorkerContext.settle: a batch whose records the broker did not take runs again, never leaves the agent."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from streams.ops.metrics import WorkerMetrics
from streams.runtime import context
from streams.runtime.context import WorkerContext


class FlakyProducer:
    """Takes records, but the broker refuses the first `failures` of them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.taken: list[bytes | None] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, *_: Any) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            done.set_exception(RuntimeError("broker refused the record"))
        else:
            self.taken.append(value)
            done.set_result(None)
        return done


class App:
    def __init__(self, producer: FlakyProducer) -> None:
        self.producer = producer


def make_context(producer: FlakyProducer) -> tuple[WorkerContext, CollectorRegistry]:
    registry = CollectorRegistry()
    fields: dict[str, Any] = dict.fromkeys(
        [
            "settings",
            "topics",
            "rules",
            "templates",
            "users",
            "preferences",
            "delivered",
            "digests",
            "throttles",
        ]
    )
    ctx = WorkerContext(app=cast(Any, App(producer)), metrics=WorkerMetrics(registry, "test"), **fields)
    return ctx, registry


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "SETTLE_FIRST_DELAY_SECONDS", 0.0)


async def test_a_refused_batch_runs_again_until_the_broker_takes_it() -> None:
    producer = FlakyProducer(failures=3)  # run 1: both refused; run 2: the first; run 3: none
    ctx, registry = make_context(producer)
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        await ctx.produce("herald.routed", b"alice", b"record-1")
        await ctx.produce("herald.routed", b"bob", b"record-2")

    await ctx.settle("route", work)
    assert runs == 3
    # At least once: run 2's record-2 went through and is sent again by run 3.
    assert producer.taken == [b"record-2", b"record-1", b"record-2"]
    assert registry.get_sample_value("herald_batch_failures_total", {"agent": "route"}) == 2


async def test_a_batch_that_goes_through_runs_once() -> None:
    producer = FlakyProducer(failures=0)
    ctx, registry = make_context(producer)
    await ctx.settle("intake", lambda: ctx.produce("herald.events", None, b"x"))
    assert producer.taken == [b"x"]
    assert registry.get_sample_value("herald_batch_failures_total", {"agent": "intake"}) is None


async def test_cancellation_is_not_retried() -> None:
    ctx, _ = make_context(FlakyProducer(failures=0))

    async def work() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await ctx.settle("route", work)
