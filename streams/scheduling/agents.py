"""The scheduler's agents: one per tier topic, each holding the head of its partitions until it is due
(`streams.scheduling.tiers` decides where a record goes next)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from schemas.deadletter import DeadLetterStage
from streams.runtime.outbox import Outbox
from streams.runtime.worker import Worker
from streams.scheduling.tiers import read_held, release, wake_at


def scheduling_targets(worker: Worker) -> frozenset[str]:
    """Where a held record may be released to: the delivery topics and the routed events (digests, escalation
    steps)."""
    names = worker.topics.names
    return frozenset({*names.delivery.values(), names.routed})


async def _release(worker: Worker, targets: frozenset[str], tier: int, event: Any, outbox: Outbox) -> None:
    message = event.message
    try:
        held = read_held(message.value, targets)
        wake = wake_at(held, message.timestamp, tier)
        now = worker.clock().timestamp()
        if wake > now:
            # One record at a time, in order: every record of a tier waits as long, so the head of the
            # partition is always the next one due.
            await asyncio.sleep(wake - now)
        record, due = release(held, worker.clock(), worker.topics.names.scheduled)
        early = (held.due_at - worker.clock()).total_seconds()
        if due and early > 0:
            # Released within the tolerance rather than sent down another tier, but never before it is due:
            # the next hops take milliseconds, and quiet hours end when they say.
            await asyncio.sleep(early)
        outbox.produce(record)
        if due:
            worker.metrics.released.labels(reason=held.reason).inc()
    except Exception as exc:
        outbox.dead_letter(message, exc, stage=DeadLetterStage.SCHEDULER)


def register_scheduling(worker: Worker) -> None:
    targets = scheduling_targets(worker)
    for tier, topic in worker.topics.scheduled.items():

        async def run(stream: Any, tier: int = tier) -> AsyncIterator[None]:
            async for event in stream.events():
                await worker.settler.settle(
                    f"scheduled.{tier}s", partial(_release, worker, targets, tier, event)
                )
                yield None

        worker.app.agent(topic, name=f"herald.scheduled.{tier}s")(run)
