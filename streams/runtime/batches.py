"""How the batch-fed agents read their stream: each Faust event carries a partition's fetched records
(adapters.broker.fetched_batches), and a step takes the events that arrive within a few milliseconds of each
other, so live traffic's small fetches from several partitions are processed, produced and acknowledged
together rather than one settle each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, TypeVar

from kernel.settings import Settings

T = TypeVar("T")

# Records a step handles between two turns of the event loop: a step's records are handled synchronously,
# and a backlog's batch of thousands would hold the loop (timers, the ops server, other agents) for seconds.
RECORDS_PER_TURN = 64

# Fetched batches per step at most: enough to take one fetch of every partition a worker may hold, few
# enough that a step's records stay in the tens of thousands.
FETCHES_PER_STEP = 64


def coalesced(stream: Any, settings: Settings) -> AsyncIterator[Sequence[Any]]:
    """The stream's events, in lists of those that arrived within HERALD_BATCH_SECONDS."""
    return stream.take_events(FETCHES_PER_STEP, within=settings.batch_seconds)  # type: ignore[no-any-return]


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
