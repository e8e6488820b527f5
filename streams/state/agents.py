"""The directory's agents: profile and preference records applied in batches to the users and preferences
tables; a bad record goes to the DLQ alone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, Generic, NamedTuple, TypeVar

from schemas.deadletter import DeadLetterStage
from streams.effects import Effects, Rejected
from streams.runtime.batches import coalesced
from streams.runtime.outbox import Outbox, bind_event
from streams.runtime.tables import StateTable
from streams.runtime.worker import Worker
from streams.state.directory import Applied, Revisions, StateChange, apply_preferences, apply_profile
from streams.state.history import History

Step = Callable[[Worker, Any], StateChange]
V = TypeVar("V")


class _Stored(NamedTuple, Generic[V]):
    current: V | None  # the user's stored value
    revisions: Revisions  # where the record stands against it


def _stored(table: StateTable[V], message: Any) -> _Stored[V]:
    if message.key is None:
        return _Stored(None, Revisions.of(message.offset, None, message.headers))
    current, revision = table.revised(message.key.decode(errors="replace"))
    return _Stored(current, Revisions.of(message.offset, revision, message.headers))


def _profile_step(worker: Worker, message: Any) -> StateChange:
    stored = _stored(worker.tables.users, message)
    return apply_profile(
        message.topic,
        message.key,
        message.value,
        message.partition,
        worker.settings.partitions,
        stored.current,
        revisions=stored.revisions,
    )


def _preferences_step(worker: Worker, message: Any) -> StateChange:
    stored = _stored(worker.tables.preferences, message)
    history = History.of(
        worker.topics.names.preferences_history, message.headers, message.timestamp, worker.clock()
    )
    return apply_preferences(
        message.topic,
        message.key,
        message.value,
        message.partition,
        worker.settings.partitions,
        stored.current,
        history=history,
        revisions=stored.revisions,
    )


def _count(worker: Worker, stage: DeadLetterStage, applied: Applied) -> None:
    metrics = worker.metrics
    if applied is Applied.REHOMED:
        metrics.profiles_rehomed.inc()
    elif applied is Applied.SKIPPED:
        metrics.profiles_skipped.inc()
    elif applied is Applied.APPLIED:
        profiles = stage == DeadLetterStage.DIRECTORY
        (metrics.profiles_applied if profiles else metrics.preferences_applied).inc()


async def _apply_batch(
    worker: Worker, step: Step, stage: DeadLetterStage, events: list[Any], outbox: Outbox
) -> None:
    # Each record's effects are applied before the next one is read, so a user's records in one batch
    # build on each other.
    for event in events:
        # Faust's RocksDB store reads the current event's partition, and a batch holds several partitions'
        # records: the user's current profile or preferences are read from this record's.
        bind_event(event)
        try:
            change = step(worker, event.message)
        except Exception as exc:  # an unexpected error is dead-lettered, never lost
            change = StateChange(Applied.REJECTED, Effects(rejected=[Rejected(exc, stage)]))
        _count(worker, stage, change.applied)
        outbox.apply(event, change.effects, stage)


def _register(worker: Worker, topic: Any, name: str, stage: DeadLetterStage, step: Step) -> None:
    settings = worker.settings

    async def agent(stream: Any) -> AsyncIterator[None]:
        async for events in coalesced(stream, settings, most=settings.batch_size):
            await worker.settler.settle(stage, partial(_apply_batch, worker, step, stage, events))
            yield None

    worker.app.agent(topic, name=name)(agent)


def register_state(worker: Worker) -> None:
    users, preferences = worker.topics.users, worker.topics.preferences
    _register(worker, users, "herald.directory", DeadLetterStage.DIRECTORY, _profile_step)
    _register(worker, preferences, "herald.preferences", DeadLetterStage.PREFERENCES, _preferences_step)
