"""The router's two agents, thin over the steps `streams.routing.intake` (fan an event out per recipient,
re-keyed by user id) and `streams.routing.route` (meet each with its recipient's state on the worker that
holds it): read whole fetched batches, call the step per record, count once per batch, and apply the effects
through the worker's outbox, which produces them together."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from functools import partial
from typing import Any

from schemas.channels import Channel
from schemas.deadletter import DeadLetterStage
from schemas.events import RecipientEvent
from streams.effects import Effects, Record
from streams.ops.metrics import WorkerMetrics
from streams.routing.intake import STAGE as INTAKE_STAGE
from streams.routing.intake import take
from streams.routing.result import StepResult, Tally, reject
from streams.routing.route import STAGE as ROUTE_STAGE
from streams.routing.route import RecipientState, recipient_key, route, route_item
from streams.runtime.batches import chunks, coalesced, records_of, turns
from streams.runtime.outbox import Outbox, bind_event
from streams.runtime.tables import Tables
from streams.runtime.worker import Worker
from streams.state.directory import home_partition


def register_routing(worker: Worker) -> None:
    """Declare the intake and route agents. Their names and topics are part of the deployed state: renaming
    either orphans its consumer group offsets."""
    settings = worker.settings

    routed = worker.topics.names.routed

    def held() -> frozenset[int]:
        # The routed partitions this worker holds now, and with them the recipients' state (co-partitioned).
        return frozenset(tp.partition for tp in worker.app.assignor.assigned_actives() if tp.topic == routed)

    async def run_intake(stream: Any) -> AsyncIterator[None]:
        async for events in coalesced(stream, settings):
            for inputs in chunks(records_of(events), settings.batch_size):
                await worker.settler.settle("intake", partial(_intake_batch, worker, inputs, held()))
            yield None

    async def run_route(stream: Any) -> AsyncIterator[None]:
        async for events in coalesced(stream, settings):
            for inputs in chunks(records_of(events), settings.batch_size):
                await worker.settler.settle("route", partial(_route_batch, worker, inputs))
            yield None

    worker.app.agent(worker.topics.events, name="herald.intake")(run_intake)
    worker.app.agent(worker.topics.routed, name="herald.route")(run_route)


async def _intake_batch(
    worker: Worker, inputs: Sequence[tuple[Any, Any]], held: Collection[int], outbox: Outbox
) -> None:
    """Each (event, record) of a run: the record, and the Faust event it came in. An event for one recipient
    whose state is on the partition it came in on, `held` here, is routed at once (`intake.take`)."""
    routed, book, limit = worker.topics.names.routed, worker.rules.book, worker.settings.max_recipients
    partitions = worker.settings.partitions
    tallies = []
    # A routed record is at most about four times the event it carries (JSON numbers written out: `1e15` as
    # `1000000000000000.0`) plus its envelope, so an event up to an eighth of the record budget cannot make
    # one over it: routing it here lets through nothing the hop would refuse. A larger one takes the hop,
    # where the outbox measures its routed record (too large: at intake), whatever partition it came in on.
    roomy = worker.settings.max_record_bytes // 8
    async for event, record in turns(inputs):
        nearby = record.partition in held and len(record.value or b"") <= roomy
        taken = take(
            record.value, book, routed, limit, here=partial(_is_home, nearby, partitions, record.partition)
        )
        tallies.append(_apply(outbox, event, record, taken.result, INTAKE_STAGE))
        if taken.here is not None:
            # As the route agent would, on this record's partition: its recipient's.
            bind_event(event)
            result, stage = _route_here(worker, taken.here)
            tallies.append(_apply(outbox, event, record, result, stage))
    worker.metrics.events_consumed.inc(len(inputs))
    count(worker.metrics, tallies)


async def _route_batch(worker: Worker, inputs: Sequence[tuple[Any, Any]], outbox: Outbox) -> None:
    # One record at a time, each applied before the next is read: two events for one recipient in a batch
    # must see each other's digest and throttle writes (the outbox writes the table as it applies, with no
    # await between reading a recipient's state and writing it).
    tallies = []
    async for event, record in turns(inputs):
        # Faust's RocksDB store reads the partition of the current event, and a batch holds several
        # partitions' fetches: the recipient's state is read from this record's.
        bind_event(event)
        result = _route_one(worker, record)
        tallies.append(_apply(outbox, event, record, result, ROUTE_STAGE))
    count(worker.metrics, tallies)


def _is_home(nearby: bool, partitions: int, partition: int, recipient: str) -> bool:
    return nearby and home_partition(recipient, partitions) == partition


def _apply(outbox: Outbox, event: Any, record: Any, result: StepResult, stage: DeadLetterStage) -> Tally:
    """Apply a step's effects and return what to count; or, when one of its records would be too large, the
    input's rejection (the outbox dead-lettered it and applied nothing else)."""
    too_large = outbox.apply(event, result.effects, stage, record)
    return result.tally if too_large is None else reject(too_large, stage).tally


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


def _route_here(worker: Worker, item: RecipientEvent) -> tuple[StepResult, DeadLetterStage]:
    """An event intake kept (`intake.take`) routed at once, and the stage its dead letters belong to. A
    recipient with no profile yet takes the hop after all: their profile may be on its way (a sign-up
    publishes it just before the welcome event, on another topic), and the route agent meets the routed record
    a fetch later, as it met every event before intake kept any."""
    try:
        state = read_state(worker.tables, item.recipient)
    except Exception as exc:  # a stored value this version cannot read: park the record, do not loop on it
        return reject(exc, ROUTE_STAGE), ROUTE_STAGE
    if state.profile is None:
        hop = Record.of(worker.topics.names.routed, item.recipient, item)
        return StepResult(Effects(records=[hop]), Tally()), INTAKE_STAGE
    result = route_item(
        item,
        state,
        rules=worker.rules.book,
        templates=worker.templates,
        topics=worker.topics.names,
        now=worker.clock(),
        throttle_memory_seconds=worker.settings.throttle_memory_seconds,
    )
    return result, ROUTE_STAGE


def read_state(tables: Tables, user_id: str) -> RecipientState:
    return RecipientState(
        user_id=user_id,
        profile=tables.users.get(user_id),
        preferences=tables.preferences.get(user_id),
        digests=tables.digests.get(user_id),
        throttles=tables.throttles.get(user_id),
        inbox=partial(tables.inbox.get, user_id),
    )


def count(metrics: WorkerMetrics, tallies: Iterable[Tally]) -> None:
    """Add a batch's tallies to the metrics: one increment per label set, not per record. (The tallies'
    entries are gathered and counted once: a `Counter.update` per tally was a tenth of routing an event.)"""
    rejected: list[Any] = []
    routed: list[Channel] = []
    deferred: list[tuple[Channel, Any]] = []
    skipped: list[tuple[Channel, Any]] = []
    for tally in tallies:
        if tally.rejected:
            rejected += tally.rejected
        if tally.routed:
            routed += tally.routed
        if tally.deferred:
            deferred += tally.deferred
        if tally.skipped:
            skipped += tally.skipped
    for reason, n in Counter(rejected).items():
        metrics.events_rejected.labels(reason=reason).inc(n)
    for channel, n in Counter(routed).items():
        metrics.notifications_routed.labels(channel=channel.value).inc(n)
    for (channel, reason), n in Counter(deferred).items():
        metrics.notifications_deferred.labels(channel=channel.value, reason=reason).inc(n)
    for (channel, reason), n in Counter(skipped).items():
        metrics.notifications_skipped.labels(channel=channel.value, reason=reason).inc(n)
