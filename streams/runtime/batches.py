"""How the batch-fed agents read their stream: each Faust event carries a partition's fetched records
(adapters.broker.fetched_batches), and a step takes the events that are there when it starts, so a fetch's
records from several partitions are processed, produced and acknowledged together rather than one settle
each, and a lone record does not wait for company."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, TypeVar

from mode.utils.futures import notify

from kernel.settings import Settings

T = TypeVar("T")

# Records a step handles between two turns of the event loop: a step's records are handled synchronously,
# and a backlog's batch of thousands would hold the loop (timers, the ops server, other agents) for seconds.
RECORDS_PER_TURN = 64

# Fetched batches per step at most: enough to take one fetch of every partition a worker may hold, few
# enough that a step's records stay in the tens of thousands.
FETCHES_PER_STEP = 64


async def coalesced(
    stream: Any, settings: Settings, most: int = FETCHES_PER_STEP
) -> AsyncIterator[list[Any]]:
    """The stream's events in lists: a list starts with the first event to arrive and takes what else comes
    while the stream's queue still holds some, for at most HERALD_BATCH_SECONDS, `most` events and
    HERALD_BATCH_SIZE records (a fetched batch counts its records). A fetch hands its partitions' batches over
    together, so they go through one step; under load, what queued up while a step was being settled goes
    through the next. A step's events are acknowledged when it ends, so the records bound is also what a
    crash replays beyond the commit interval: a backlog's step took every queued batch, 38,000 emails that
    took minutes to settle (bench/RESULTS.md, thirteenth session).

    Faust's `take_events`, with its wait changed: Faust wakes a taking agent every `within` seconds, whether
    anything came or not (nine agents at 5 ms: 1,800 wake-ups a second, about an eighth of a core of an idle
    worker), and a lone record waits for the next tick. Here an idle agent sleeps until an event arrives. The
    buffering, the acks after the step and the back-pressure are Faust's, as in `take_events`."""
    events: list[Any] = []
    records = 0
    arrived, full, consumed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    channel = aiter(stream.channel)
    loop = asyncio.get_running_loop()

    async def add(value: Any) -> Any:
        nonlocal consuming, records
        try:
            if consuming is not None:  # a step is under way: its list must not change under it
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("a stream's processor ran without its event")
            events.append(event)
            records += _records_in(event)
            arrived.set()
            if len(events) >= most or records >= settings.batch_size:
                full.set()
                consumed.clear()
                await stream.wait(consumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.log.exception("Error adding to a step's events: %r", exc)
            await stream.crash(exc)
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked below, once the step that took them is done
    stream.add_processor(add)
    stream._enable_passive(channel)
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(arrived)
            deadline = loop.time() + settings.batch_seconds
            seen = 0
            while not full.is_set() and loop.time() < deadline and (len(events) > seen or _queued(stream)):
                seen = len(events)
                await asyncio.sleep(0)
            if not events:
                arrived.clear()
                continue
            consuming = loop.create_future()
            try:
                yield list(events)
            finally:
                taken = list(events)
                events.clear()
                records = 0
                arrived.clear()
                for event in taken:
                    await stream.ack(event)
                notify(consuming)
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add)


def _records_in(event: Any) -> int:
    """The records a fetched batch carries (adapters.broker.fetched_batches); any other message is one."""
    carried = getattr(event.message, "records", None)
    return 1 if carried is None else len(carried)


def _queued(stream: Any) -> bool:
    """Whether events wait in the queue the stream reads (its channel's: Faust's `Stream._py_aiter`)."""
    return not stream.channel.queue.empty()


def records_of(events: Sequence[Any]) -> list[tuple[Any, Any]]:
    """Each record of each event, with the event it came in (its table partition, its place in the commit),
    in partition order."""
    return [(event, record) for event in events for record in event.message.records]


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in runs of at most `size`: each run is settled (produced and acknowledged) on its own, so a
    backlog's first notifications are on their way while the rest are still being routed."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def turns(items: Sequence[T]) -> AsyncIterator[T]:
    """`items`, letting the event loop run every RECORDS_PER_TURN of them."""
    for index, item in enumerate(items):
        if index and not index % RECORDS_PER_TURN:
            await asyncio.sleep(0)
        yield item
