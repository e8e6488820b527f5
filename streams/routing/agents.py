"""The router's two agents, thin over the steps `streams.routing.intake` (fan an event out per recipient,
re-keyed by user id) and `streams.routing.route` (meet each with its recipient's state on the worker that
holds it): read, call, count, and apply each batch's effects through the worker's outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from schemas.deadletter import DeadLetterStage
from streams.ops.metrics import WorkerMetrics
from streams.routing.intake import STAGE as INTAKE_STAGE
from streams.routing.intake import intake
from streams.routing.result import StepResult, Tally, reject
from streams.routing.route import STAGE as ROUTE_STAGE
from streams.routing.route import RecipientState, recipient_key, route
from streams.runtime.outbox import Outbox
from streams.runtime.tables import Tables
from streams.runtime.worker import Worker


def register_routing(worker: Worker) -> None:
    """Declare the intake and route agents. Their names and topics are part of the deployed state: renaming
    either orphans its consumer group offsets."""
    settings = worker.settings

    async def run_intake(stream: Any) -> AsyncIterator[None]:
        # In batches: Faust's hand-off per message, not CPU, is what costs, so each batch's records are
        # produced without waiting on each and acknowledged together.
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            await worker.settler.settle("intake", partial(_intake_batch, worker, events))
            yield None

    async def run_route(stream: Any) -> AsyncIterator[None]:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            await worker.settler.settle("route", partial(_route_batch, worker, events))
            yield None

    worker.app.agent(worker.topics.events, name="herald.intake")(run_intake)
    worker.app.agent(worker.topics.routed, name="herald.route")(run_route)


async def _intake_batch(worker: Worker, events: list[Any], outbox: Outbox) -> None:
    routed = worker.topics.names.routed
    for event in events:
        worker.metrics.events_consumed.inc()
        result = intake(event.message.value, worker.rules.book, routed, worker.settings.max_recipients)
        await _apply(worker, outbox, event, result, INTAKE_STAGE)


async def _route_batch(worker: Worker, events: list[Any], outbox: Outbox) -> None:
    # One event at a time, each applied before the next is read: two events for one recipient in a batch
    # must see each other's digest and throttle writes (the outbox writes the table as it applies).
    for event in events:
        result = _route_one(worker, event.message)
        await _apply(worker, outbox, event, result, ROUTE_STAGE)


async def _apply(
    worker: Worker, outbox: Outbox, event: Any, result: StepResult, stage: DeadLetterStage
) -> None:
    """Apply a step's effects and count them; or, when one of its records would be too large, count the
    input's rejection (the outbox dead-lettered it and applied nothing else)."""
    too_large = await outbox.apply(event, result.effects, stage)
    count(worker.metrics, result.tally if too_large is None else reject(too_large, stage).tally)


def _route_one(worker: Worker, message: Any) -> StepResult:
    try:
        state = read_state(worker.tables, recipient_key(message.key))
    except Exception as exc:  # a stored value this version cannot read: park the record, do not loop on it
        return reject(exc, ROUTE_STAGE)
    return route(
        message.value,
        state,
        rules=worker.rules.book,
        templates=worker.templates,
        topics=worker.topics.names,
        now=worker.clock(),
        throttle_memory_seconds=worker.settings.throttle_memory_seconds,
    )


def read_state(tables: Tables, user_id: str) -> RecipientState:
    return RecipientState(
        user_id=user_id,
        profile=tables.users.get(user_id),
        preferences=tables.preferences.get(user_id),
        digests=tables.digests.get(user_id),
        throttles=tables.throttles.get(user_id),
    )


def count(metrics: WorkerMetrics, tally: Tally) -> None:
    for rejected in tally.rejected:
        metrics.events_rejected.labels(reason=rejected).inc()
    for channel in tally.routed:
        metrics.notifications_routed.labels(channel=channel.value).inc()
    for channel, deferred in tally.deferred:
        metrics.notifications_deferred.labels(channel=channel.value, reason=deferred).inc()
    for channel, skipped in tally.skipped:
        metrics.notifications_skipped.labels(channel=channel.value, reason=skipped).inc()
