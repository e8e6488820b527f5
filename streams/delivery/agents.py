"""The delivery agents of each channel, thin over `streams.delivery.steps`: fresh notifications in batches,
retries one at a time from the tiered retry topics.

Within a batch, each recipient's notifications go out in order while different recipients' go out
concurrently. A batch's offsets are committed only after every notification in it was delivered, parked on
a retry topic or dead-lettered, so a crash replays rather than loses; the delivered-ids table then keeps a
replay from reaching the person twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from schemas.deadletter import DeadLetterStage
from schemas.notifications import NotificationBase
from schemas.status import Outcome
from streams.delivery import steps
from streams.delivery.answers import Send
from streams.delivery.channels import WiredChannel, wire_channels
from streams.delivery.dedup import delivered_at
from streams.delivery.expiry import DedupExpiry
from streams.delivery.providers import Providers
from streams.delivery.steps import ChannelSpec, Decision, Verdict
from streams.effects import Effects, Rejected, TableWrite
from streams.runtime.batches import chunks, coalesced, records_of
from streams.runtime.outbox import Outbox, bind_event
from streams.runtime.worker import Worker

log = logging.getLogger("herald.delivery")

N = TypeVar("N", bound=NotificationBase)


def register_delivery(worker: Worker, providers: Providers) -> None:
    """Declare each channel's fresh and retry agents. Their names and topics are part of the deployed state:
    renaming one orphans its consumer group offsets."""
    for wired in wire_channels(worker.settings, worker.topics.names, providers):
        ChannelAgents(worker, wired).register()
    register_dedup_expiry(worker)


def register_dedup_expiry(worker: Worker) -> None:
    """Sweep the delivered-ids table every HERALD_DEDUP_SWEEP_SECONDS, on the partitions this worker owns."""
    app, settings = worker.app, worker.settings
    delivery_topics = frozenset(worker.topics.names.delivery.values())

    def owned() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic in delivery_topics}

    expiry = DedupExpiry(
        worker.tables.delivered.faust,
        owned,
        settings.partitions,
        settings.dedup_retention_seconds,
        clock=lambda: worker.clock().timestamp(),
    )

    async def expire_delivered_ids() -> None:
        if app.rebalancing or app.in_recovery:
            return  # the table is not whole yet; the next sweep will find what this one would have
        removed = await expiry.sweep()
        if removed:
            worker.metrics.dedup_expired.inc(removed)

    app.timer(settings.dedup_sweep_seconds, name="herald.dedup.expiry")(expire_delivered_ids)


class RecipientLocks:
    """A lock per recipient, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, recipient: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(recipient, (asyncio.Lock(), 0))
        self._locks[recipient] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[recipient]
            if users <= 1:
                del self._locks[recipient]
            else:
                self._locks[recipient] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


@dataclass
class _Input:
    """One consumed message of a batch and, once decided, its effects: a batch run again (its produce
    failed) applies what was decided instead of deciding, and calling providers, again."""

    event: Any  # the Faust event it came in
    record: Any  # the record itself: a fetched record, or the event's own message
    effects: Effects | None = None


class ChannelAgents(Generic[N]):
    """One channel's agents: read, decide with `steps`, count, and apply each batch through the outbox."""

    def __init__(self, worker: Worker, wired: WiredChannel[N]) -> None:
        self.worker = worker
        self.spec: ChannelSpec[N] = wired.spec
        self.send: Send[N] = wired.send
        self.channel = wired.spec.channel
        self.stage = DeadLetterStage.delivery(self.channel)
        self._limit = asyncio.Semaphore(worker.settings.delivery_concurrency)
        # One delivery at a time per recipient across this channel's fresh and retry agents, so two copies
        # of a notification (a replay and its parked retry) can never both pass the dedup check.
        self._recipients = RecipientLocks()

    def register(self) -> None:
        app, settings, channel = self.worker.app, self.worker.settings, self.channel.value

        async def fresh(stream: Any) -> AsyncIterator[None]:
            async for events in coalesced(stream, settings):
                for run in chunks(records_of(events), settings.batch_size):
                    inputs = [_Input(event, record) for event, record in run]
                    await self.settle_inputs(f"deliver.{channel}", inputs)
                yield None

        app.agent(self.worker.topics.delivery[self.channel], name=f"herald.deliver.{channel}")(fresh)

        for tier, topic in enumerate(self.worker.topics.retries[self.channel], start=1):

            async def retry(stream: Any) -> AsyncIterator[None]:
                # One at a time, in order: a tier's notifications all wait about as long, so the head of
                # the partition is always the next one due.
                async for event in stream.events():
                    await self.settle(f"deliver.{channel}.retry", [event], wait_until_due=True)
                    yield None

            app.agent(topic, name=f"herald.deliver.{channel}.retry{tier}")(retry)

    async def settle(self, agent: str, events: list[Any], *, wait_until_due: bool = False) -> None:
        """Deliver Faust events that each carry one notification (a retry topic's)."""
        inputs = [_Input(event, event.message) for event in events]
        await self.settle_inputs(agent, inputs, wait_until_due=wait_until_due)

    async def settle_inputs(self, agent: str, inputs: list[_Input], *, wait_until_due: bool = False) -> None:
        await self.worker.settler.settle(agent, partial(self.run_batch, inputs, wait_until_due))

    async def run_batch(self, inputs: list[_Input], wait_until_due: bool, outbox: Outbox) -> None:
        by_recipient: dict[bytes | None, list[_Input]] = defaultdict(list)
        for item in inputs:
            by_recipient[item.record.key].append(item)
        # Every recipient's run ends before the batch does, even when one fails: a batch run again must
        # not meet a previous run's deliveries still in flight.
        results = await asyncio.gather(
            *(self._run_recipient(outbox, items, wait_until_due) for items in by_recipient.values()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        # Statuses go out last, once per batch: a status that says "delivered" must never be on the broker
        # while the dedup entry that makes a replay skip the notification may not be (a crash in between
        # would deliver it twice and report it once). One flush for the whole batch, rather than one per
        # delivery, keeps that with a single wait; the batch's offsets are committed after anyway.
        decided = [item.effects for item in inputs if item.effects is not None]
        if any(effects.writes for effects in decided):
            await outbox.flush()
        for effects in decided:
            for status in effects.statuses:
                outbox.status(status)

    async def _run_recipient(self, outbox: Outbox, items: list[_Input], wait_until_due: bool) -> None:
        for item in items:
            # Faust's RocksDB store reads the current event's partition: this message's (the delivered ids
            # and the profile are read here). Set in this task only: each recipient runs in a task of its own.
            bind_event(item.event)
            if item.effects is None:
                await self._deliver(outbox, item, wait_until_due)
            else:
                self._apply(outbox, item, self._again(item.effects))

    async def _deliver(self, outbox: Outbox, item: _Input, wait_until_due: bool) -> None:
        """Decide what becomes of one message and hand over all of it but its statuses (see `run_batch`)."""
        parsed = steps.parse(self.spec, item.record.value)
        if isinstance(parsed, Decision):
            item.effects = parsed.effects
            self._apply(outbox, item, _without_statuses(item.effects))
            return
        if wait_until_due and parsed.not_before is not None:
            delay = (parsed.not_before - self.worker.clock()).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
        async with self._limit, self._recipients.hold(parsed.recipient):
            decision = await self._decide(parsed)
            self._count(decision, parsed)
            item.effects = decision.effects
            # No await between `_decide` reading the delivered-ids record and this writing it: another
            # channel's agent may write the same recipient's record.
            self._apply(outbox, item, _without_statuses(item.effects))
            if item.effects.writes:
                # The dedup entry on the broker before this slot sends again: a provider-accepted send whose
                # entry is still in the producer's buffer is sent again after a crash. Waiting per batch
                # instead let hundreds pile up (kill -9: up to 289 duplicates against 0-38 before).
                await outbox.flush()

    def _apply(self, outbox: Outbox, item: _Input, effects: Effects) -> None:
        """Hand over `effects`; if one of them was too large, the message is dead-lettered instead, and that
        is all a batch run again does with it, and all its statuses say (none)."""
        too_large = outbox.apply(item.event, effects, self.stage, item.record)
        if too_large is not None:
            item.effects = Effects(rejected=[Rejected(too_large, self.stage)])

    async def _decide(self, notification: N) -> Decision:
        tables, recipient = self.worker.tables, notification.recipient
        try:
            when = delivered_at(tables.delivered.get, recipient, notification.notification_id)
            duplicate = steps.check_duplicate(self.spec, notification, when, self.worker.clock())
            if duplicate is not None:
                return duplicate
            answer = await self.send(notification)
            return steps.conclude(
                self.spec, notification, answer, profile=tables.users.get(recipient), now=self.worker.clock()
            )
        except Exception as exc:  # a bug in a provider adapter or a stored value this version cannot read
            return steps.reject(self.spec, exc)

    def _again(self, effects: Effects) -> Effects:
        """A decided message's effects for a batch run again. Its table writes were made in memory the first
        time; what may be missing is their changelog, so the current value is written again: the one
        decided then may since have been replaced (another agent delivered to the same recipient)."""
        writes = [
            TableWrite(w.table, w.key, self.worker.tables.by_name(w.table).faust.get(w.key))
            for w in effects.writes
        ]
        return Effects(effects.records, effects.later, [], effects.rejected, writes)

    def _count(self, decision: Decision, notification: N) -> None:
        """The metrics of one message (dead letters are the outbox's), and a line for what is not routine."""
        metrics, channel = self.worker.metrics, self.channel.value
        for attempt in decision.attempts:
            outcome = Outcome.DELIVERED if attempt.error is None else Outcome.FAILED
            metrics.provider_latency.labels(channel=channel, provider=attempt.provider).observe(
                attempt.latency_seconds
            )
            metrics.deliveries.labels(channel=channel, provider=attempt.provider, outcome=outcome.value).inc()
        if decision.addresses_removed:
            metrics.addresses_removed.labels(channel=channel).inc(decision.addresses_removed)
            log.info(
                "removed %d address(es) of a recipient a provider reported gone", decision.addresses_removed
            )
        ids = {"notification_id": notification.notification_id, "event_id": notification.event_id}
        if decision.verdict is Verdict.SKIPPED:
            metrics.notifications_skipped.labels(channel=channel, reason=decision.reason).inc()
        elif decision.verdict is Verdict.DELIVERED:
            latency = (self.worker.clock() - notification.occurred_at).total_seconds()
            metrics.end_to_end_latency.labels(channel=channel).observe(max(0.0, latency))
            # DEBUG: herald_provider_attempts_total counts deliveries; a line for each is noise at volume.
            log.debug("delivered", extra={**ids, "channel": channel, "attempt": notification.attempt})
        elif decision.verdict is Verdict.RETRY:
            metrics.retries.labels(channel=channel, reason=decision.reason).inc()
            log.info(
                "retry scheduled",
                extra={
                    **ids,
                    "channel": channel,
                    "outcome": "retry",
                    "reason": decision.reason,
                    "attempt": notification.attempt + 1,
                },
            )
        elif decision.verdict is Verdict.DEAD_LETTERED:
            log.warning(
                "dead-lettered",
                extra={**ids, "channel": channel, "outcome": "dead_lettered", "reason": decision.reason},
            )


def _without_statuses(effects: Effects) -> Effects:
    return Effects(effects.records, effects.later, [], effects.rejected, effects.writes)
