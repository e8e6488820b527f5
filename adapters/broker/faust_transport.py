"""Faust's aiokafka transport, with two corrections Herald's at-least-once promise depends on.

1. End offsets checked against a fetch (see adapters.broker.offsets): Faust reads a changelog up to the
   partition's end offset when it recovers a table; on the embedded broker that offset can fall short of the
   last records, and the table would come back with old values (the delivered-ids table forgetting recent
   deliveries, so a replay reached the person twice).

2. A clean cut around the seek to committed offsets after a rebalance. faust-streaming 0.15 resumes the
   stream partitions before that seek and, having resumed flow control at the start of recovery, lets the
   fetcher hand records to the streams meanwhile; the consumer marks each one read. After the seek, resuming
   flow control clears the streams' queues, dropping records that were handed over and marked read, so they
   are never processed, and their copies fetched again are discarded as already read. A restarted worker
   lost notifications this way. Here the flow stops before the seek and stays stopped until recovery resumes
   it, so what the queues lose is only what the seek makes the consumer fetch again.

3. The start of the log for a partition nothing was ever committed on. A fetch that returns while the flow is
   stopped (as it is around the seek after recovery) drops its records, which aiokafka already counts as
   consumed, and relies on the seek to committed offsets to fetch them again. aiokafka seeks only to a
   committed offset above zero, so on a partition with no commit (a scheduler tier whose worker was killed
   before its first commit) the dropped records were never read: a restarted worker sent none of the digests
   it had scheduled.

4. Paused partitions that are really paused. Faust pauses a partition by leaving it out of the partitions it
   asks aiokafka for, but aiokafka keeps fetching it: the records sit undrained (up to a fetch's worth per
   partition), and while such a result is under 100 ms old aiokafka sends no fetch to that broker at all
   (its `prefetch_backoff`, meant for a reader that is slow to drain). After recovery Faust pauses the
   active tables' changelogs, so the worker's own first table write to each changelog partition held back
   every topic's next fetch by 100 ms: the first in-app notifications after a start took 60-240 ms through
   the worker instead of 15-30. Herald's consumer pauses and resumes them in aiokafka too.

It also fetches the retry and scheduler tiers less often than the hot topics (adapters.broker.fetch_schedule,
which also mends a race in aiokafka's fetch routine that held every fetch back 200 ms now and then),
leaves table changelogs out of Faust's stall check (`verify_event_path`), sets the worker consumer's
fetch wait, which Faust fixes at 1,500 ms (`Transport.fetch_max_wait_ms`; longer while tables recover and
once the worker has handed nothing over for a second: `_Consumer._tune_fetch_wait`), and hands the records
of the batch-fed topics (`Transport.batched_topics`) over a whole fetched batch per partition at a time
(adapters.broker.fetched_batches).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import ack_lock  # type: ignore[attr-defined]  # the lock Faust's ack holds
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode.utils.futures import notify

from adapters.broker.fetch_schedule import DelayedTopics, wake_after_reaped_fetches
from adapters.broker.fetched_batches import (
    BatchMessage,
    FetchedBatch,
    answered_offsets,
    to_batch_message,
)
from adapters.broker.offsets import checked_end_offsets

# A worker that handed nothing over for this long fetches with its idle wait (`idle_fetch_max_wait_ms`).
IDLE_SECONDS = 1.0


class ReadOffsets(defaultdict[TP, int | None]):
    """The consumer's "already read up to" marks, which can be held back while the flow is stopped.

    When the flow stops, the fetch loop gives up on the record it was handing over but still marks it read.
    While held, a mark may only move back (as a seek moves it), never forward: a mark too far back costs a
    record read twice, one too far forward loses records."""

    def __init__(self) -> None:
        super().__init__(lambda: None)
        self.held = False

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        if self.held and offset is not None:
            current = self.get(tp)
            if current is None or offset > current:
                return
        super().__setitem__(tp, offset)


async def seek_to_committed(
    consumer: AIOKafkaConsumer, from_start: Callable[[TopicPartition], bool]
) -> dict[TopicPartition, int | None]:
    """Every assigned partition to its committed offset, as `AIOKafkaConsumer.seek_to_committed`, and each
    partition with nothing committed (or 0) that `from_start` accepts to the start of its log, where aiokafka
    leaves the fetch position wherever fetching had moved it. Returns the committed offsets."""
    committed: dict[TopicPartition, int | None] = await consumer.seek_to_committed()
    never = [tp for tp, offset in committed.items() if not offset and from_start(tp)]
    if never:
        await consumer.seek_to_beginning(*never)
    return committed


def set_fetching(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], fetching: bool) -> None:
    """Resume or pause the assigned ones of `partitions` in aiokafka's fetcher. A paused partition's records
    fetched and not yet handed over are dropped, as a seek drops them: its position stays at the last record
    handed over, so they are fetched again once it resumes."""
    assigned = consumer.assignment()
    chosen = [tp for tp in partitions if tp in assigned]
    if fetching:
        consumer.resume(*chosen)
        return
    consumer.pause(*chosen)
    fetched = getattr(consumer._fetcher, "_records", {})  # no fetcher before the consumer starts
    for tp in chosen:
        fetched.pop(tp, None)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def on_start(self) -> None:
        await super().on_start()  # creates and starts the consumer, and with it aiokafka's fetcher
        transport = cast(Transport, self.transport)
        if self._consumer is None:
            return
        # Around the delayed topics' schedule, so it sees the requests and timeout that schedule made.
        if transport.delayed_topics and transport.delayed_fetch_interval_ms:
            interval = transport.delayed_fetch_interval_ms / 1000
            DelayedTopics(transport.delayed_topics, interval).install(self._consumer._fetcher)
        wake_after_reaped_fetches(self._consumer._fetcher)

    def set_fetching(self, tps: Iterable[TP], fetching: bool) -> None:
        """`set_fetching` on the consumer, in the consumer's own thread (aiokafka's pause makes a future of
        that thread's loop), after whatever this thread was already asked to do: a seek requested after it
        sees the partitions in the state asked for here."""
        consumer = self._consumer
        if consumer is None or self.thread_loop.is_closed():
            return  # not started, or stopped: nothing is fetched
        partitions = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        self.thread_loop.call_soon_threadsafe(set_fetching, consumer, partitions, fetching)

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by aiokafka when the consumer starts its fetcher; Faust passes a constant and has no setting.
        consumer._fetch_max_wait_ms = cast(Transport, transport).fetch_max_wait_ms
        return consumer

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return cast(Mapping[TP, int], await self.call_thread(self._seek_to_committed))

    async def _seek_to_committed(self) -> Mapping[TopicPartition, int | None]:
        # Table changelogs are positioned by recovery, never by committed offsets; a stream partition with
        # no commit starts where the app's reset policy says (Herald's is the earliest record).
        changelogs = self.app.tables.changelog_topics
        earliest = self.app.conf.consumer_auto_offset_reset == "earliest"
        return await seek_to_committed(
            self._ensure_consumer(), lambda tp: earliest and tp.topic not in changelogs
        )

    def verify_event_path(self, now: float, tp: TP) -> None:
        # Faust's stall check looks for records no stream takes. A table's changelog is read by the table (on
        # recovery, or as a standby), never by a stream, and an active one is left behind its high watermark
        # by the worker's own writes: checked, each was an ERROR every few seconds after the first 300.
        if tp.topic in self.app.tables.changelog_topics:
            return None
        return super().verify_event_path(now, tp)

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return listed  # last stable offsets, which come from fetches already
        bootstrap = faust_aiokafka.server_list(self.transport.url, faust_aiokafka.Transport.default_port)
        checked = await checked_end_offsets(bootstrap, cast(Mapping[Any, int], listed))
        return cast(Mapping[TP, int], checked)


class _Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = ReadOffsets()
        self._last_handed_over = 0.0  # monotonic time of the last fetch that handed records over

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def _batched(self) -> frozenset[str]:
        return cast(Transport, self.transport).batched_topics

    def _tune_fetch_wait(self) -> None:
        """A long fetch wait while tables recover, the configured one after. A broker that holds a fetch for
        part of its wait (the embedded one) returns what gathered meanwhile, so reading a long changelog in
        10 ms fetches took 20 s for 20,000 records where 1,500 ms fetches took 8; streams are paused then, so
        nothing waits on the latency.

        The idle wait once nothing was handed over for IDLE_SECONDS: the worker is idle, or every partition
        with records is held back because its agent's queue is full (Faust then leaves it out of `getmany`).
        Either way a fetch answered sooner finds nothing to hand over, and on the embedded broker an idle
        worker's 10 ms fetches cost it and the broker 0.2-0.3 of a core together (bench/RESULTS.md,
        thirteenth session). The first record handed over brings the configured wait back for the next
        request."""
        fetcher = getattr(self._thread._ensure_consumer(), "_fetcher", None)
        if fetcher is None:
            return
        transport = cast(Transport, self.transport)
        if self.app.in_recovery:
            wanted = transport.recovery_fetch_max_wait_ms
        elif time.monotonic() - self._last_handed_over >= IDLE_SECONDS:
            wanted = max(transport.fetch_max_wait_ms, transport.idle_fetch_max_wait_ms)
        else:
            wanted = transport.fetch_max_wait_ms
        if fetcher._fetch_max_wait_ms != wanted:
            fetcher._fetch_max_wait_ms = wanted  # read by the fetcher for each request it builds

    # Faust's signature, timeout included.
    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:  # noqa: ASYNC109
        self._tune_fetch_wait()
        records = await super()._getmany(active_partitions, timeout)
        if records:
            self._last_handed_over = time.monotonic()
        batched = self._batched
        if not batched or not records:
            return records
        return {
            tp: [FetchedBatch(fetched)] if tp.topic in batched and fetched else fetched
            for tp, fetched in records.items()
        }

    def _to_message(self, tp: TP, record: Any) -> Any:
        if isinstance(record, FetchedBatch):
            # Called as the fetch loop hands the message over, so the read mark is the one it checks against.
            return to_batch_message(tp, record, self._read_offset.get(tp), self.app.consumer_generation_id)
        return super()._to_message(tp, record)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # A batch message's ack answers for the offsets before it itself (fetched_batches.first_answered).
        if tp.topic in self._batched:
            return
        await super()._add_gap(tp, offset_from, offset_to)

    def ack(self, message: Message) -> bool:
        if not isinstance(message, BatchMessage):
            return super().ack(message)
        with ack_lock:  # Faust's own ack takes it for the same bookkeeping
            if message.acked:
                return False
            message.acked = True
            try:
                tp = message.tp
                index = self._acked_index[tp]
                offsets = answered_offsets(message, self._committed_offset[tp], index)
                self._unacked_messages.discard(message)
                index.update(offsets)
                self._acked[tp].extend(offsets)
                self._n_acked += len(offsets)
                return bool(offsets)
            finally:
                notify(self._waiting_for_ack)

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        tpset = set(tps)
        super().pause_partitions(tpset)
        cast(_ConsumerThread, self._thread).set_fetching(tpset, fetching=False)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tpset = set(tps)
        super().resume_partitions(tpset)
        cast(_ConsumerThread, self._thread).set_fetching(tpset, fetching=True)

    def stop_flow(self) -> None:
        cast(ReadOffsets, self._read_offset).held = True
        super().stop_flow()

    def resume_flow(self) -> None:
        cast(ReadOffsets, self._read_offset).held = False
        super().resume_flow()

    async def perform_seek(self) -> None:
        # Every caller (recovery, or a fetch that found the flow stopped) resumes flow control and then the
        # consumer's flow after the seek; until then nothing may reach a stream queue.
        self.app.flow_control.suspend()
        self.stop_flow()
        await super().perform_seek()


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[Any] = _Consumer
    # How long a worker's fetch may wait on the broker for data (HERALD_FETCH_MAX_WAIT_MS); set by the app.
    fetch_max_wait_ms: int = 1500
    # The fetch wait once nothing was handed over for IDLE_SECONDS; set by the app.
    idle_fetch_max_wait_ms: int = 1500
    # The fetch wait while tables recover (Faust's own).
    recovery_fetch_max_wait_ms: int = 1500
    # Topics whose records reach their agents a fetched partition batch at a time; set by the app.
    batched_topics: frozenset[str] = frozenset()
    # Topics fetched once every `delayed_fetch_interval_ms` (0: with every fetch); set by the app.
    delayed_topics: frozenset[str] = frozenset()
    delayed_fetch_interval_ms: int = 0
