"""The inbox agent: in-app notifications and clients' commands for the users of a partition, read together
in order (both topics are keyed by user id and co-partitioned with the `inbox` table), applied through the
outbox; and the sweep that has entries past the retention dropped, through the same agent."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from functools import partial
from typing import Any

from schemas.channels import Channel
from schemas.deadletter import DeadLetterStage
from schemas.inbox import InboxAction, InboxCommand
from streams.effects import Effects, Record, Rejected
from streams.inbox import steps
from streams.inbox.model import Index, is_index_key
from streams.inbox.steps import InboxPolicy
from streams.runtime.batches import chunks, coalesced, records_of, turns
from streams.runtime.outbox import Outbox, bind_event
from streams.runtime.store_keys import walk_keys
from streams.runtime.topics import batch_fed_topic
from streams.runtime.worker import Worker
from streams.state.directory import home_partition

log = logging.getLogger("herald.inbox")

SWEEP_CHUNK = 2_000  # index keys looked at between two turns of the event loop


def inbox_policy(worker: Worker) -> InboxPolicy:
    settings = worker.settings
    return InboxPolicy(
        capacity=settings.inbox_size,
        retention_ms=int(settings.inbox_retention_days * 86_400_000),
        max_bytes=settings.inapp_max_bytes,
        feed_topic=worker.topics.names.inbox_feed,
    )


def register_inbox(worker: Worker) -> None:
    """Declare the inbox agent and its sweep. The agent's name is part of the deployed state: renaming it
    orphans its consumer group offsets."""
    app, settings, names = worker.app, worker.settings, worker.topics.names
    policy = inbox_policy(worker)
    inapp, commands = names.delivery[Channel.INAPP], names.inbox_commands
    source = batch_fed_topic(
        app,
        inapp,
        commands,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        replicas=settings.replication_factor,
    )

    async def run(stream: Any) -> AsyncIterator[None]:
        async for events in coalesced(stream, settings):
            for inputs in chunks(records_of(events), settings.batch_size):
                await worker.settler.settle("inbox", partial(_batch, worker, policy, commands, inputs))
            yield None

    app.agent(source, name="herald.inbox")(run)

    async def sweep() -> None:
        if app.rebalancing or app.in_recovery:
            return  # the table is not whole yet; the next sweep will find what this one would have
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == inapp}
        expiring = await _expiring(worker, policy, owned)
        if expiring:
            await _request_expiry(worker, expiring)

    app.timer(settings.inbox_sweep_seconds, name="herald.inbox.expiry")(sweep)


async def _batch(
    worker: Worker, policy: InboxPolicy, commands: str, inputs: Sequence[tuple[Any, Any]], outbox: Outbox
) -> None:
    # One record at a time, each applied before the next is read: two records for one user in a batch must
    # see each other's writes (the outbox writes the table as it applies, with no await in between).
    table = worker.tables.inbox.faust
    metrics = worker.metrics
    async for event, record in turns(inputs):
        # Faust's RocksDB store reads the partition of the current event: this record's.
        bind_event(event)
        now = worker.clock()
        if record.topic == commands:
            stage = DeadLetterStage.INBOX_COMMAND
            effects = _decided(steps.apply, policy, table.get, record.value, now, stage)
        else:
            stage = DeadLetterStage.INAPP
            effects = _decided(steps.store, policy, table.get, record.value, now, stage)
        too_large = outbox.apply(event, effects, stage, record)
        if too_large is not None:
            continue
        expired = sum(1 for write in effects.writes if write.value is None and not is_index_key(write.key))
        if expired:
            metrics.inbox_expired.inc(expired)
        if stage is DeadLetterStage.INAPP and effects.records:
            metrics.inbox_stored.inc()
            delivered = effects.statuses[0]
            metrics.end_to_end_latency.labels(channel="inapp").observe(delivered.latency_seconds or 0.0)
        elif stage is DeadLetterStage.INAPP and effects.statuses:
            skipped = effects.statuses[0]
            metrics.notifications_skipped.labels(channel="inapp", reason=skipped.reason).inc()
        elif stage is DeadLetterStage.INBOX_COMMAND and not effects.rejected:
            metrics.inbox_commands.labels(action=_action(record.value)).inc()


def _decided(step: Any, policy: InboxPolicy, read: Any, value: bytes | None, now: Any, stage: Any) -> Effects:
    try:
        return step(policy, read, value or b"", now)  # type: ignore[no-any-return]
    except Exception as exc:  # a stored value this version cannot read: park the record, do not loop on it
        log.exception("inbox step failed")
        return Effects(rejected=[Rejected(exc, stage)])


def _action(value: bytes | None) -> str:
    try:
        return InboxCommand.model_validate_json(value or b"").action.value
    except ValueError:
        return "invalid"


async def _expiring(worker: Worker, policy: InboxPolicy, owned: set[int]) -> list[str]:
    """Users of the owned partitions whose oldest kept notification is past the retention (read only: the
    agent makes the change, in order with the user's other records)."""
    table = worker.tables.inbox.faust
    partitions = worker.settings.partitions
    oldest_ms = int(worker.clock().timestamp() * 1000) - policy.retention_ms
    found = []
    keys = _index_keys(table.data)
    while chunk := list(itertools.islice(keys, SWEEP_CHUNK)):
        for key in chunk:
            if home_partition(key, partitions) not in owned:
                continue
            lines = Index.load(table.data.get(key)).lines
            if lines and lines[0].created_ms < oldest_ms:
                found.append(key)
        await asyncio.sleep(0)
    return found


def _index_keys(store: Any) -> Iterator[str]:
    """The users' index keys (not the notifications')."""
    return (key for key in walk_keys(store) if isinstance(key, str) and is_index_key(key))


async def _request_expiry(worker: Worker, users: list[str]) -> None:
    """An `expire` command per user on the commands topic: the agent drops what is past the retention."""
    now_ms = int(worker.clock().timestamp() * 1000)
    topic = worker.topics.names.inbox_commands

    async def produce(outbox: Outbox) -> None:
        for user_id in users:
            command = InboxCommand(
                command_id=f"sweep-{secrets.token_hex(8)}",
                user_id=user_id,
                action=InboxAction.EXPIRE,
                at=now_ms,
            )
            outbox.produce(Record.of(topic, user_id, command))

    await worker.settler.settle("inbox.sweep", produce)
    log.info("asked for the expiry of %d inboxes", len(users))
