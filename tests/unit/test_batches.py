"""How an agent takes its events (streams.runtime.batches.coalesced), on a real Faust stream over an
in-memory channel: what is queued together goes through one step, at most `most` at a time, and a lone event
is taken at once, however long HERALD_BATCH_SECONDS is. Faust's own `take_events` held it until its timer
fired, and woke every agent on that timer while nothing came."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import faust

from adapters.broker.fetched_batches import FetchedBatch, to_batch_message
from kernel.settings import Settings
from streams.runtime.batches import coalesced


@dataclass(frozen=True)
class _Record:
    offset: int
    timestamp: int | None
    timestamp_type: int = 0


LONG_WINDOW = 10.0  # seconds, the most the setting allows: a lone event held that long fails the wait below
WAIT = 5.0


@asynccontextmanager
async def channel_stream() -> AsyncIterator[tuple[Any, Any]]:
    # Made in the test's own event loop, which Faust's services bind to. The consumer is never started: a
    # channel's events do not come from Kafka, but streams acknowledge them through it.
    app = faust.App("herald-batches-test", broker="kafka://127.0.0.1:9", store="memory://")
    app.flow_control.resume()
    channel = app.channel()
    stream = app.stream(aiter(channel))  # as an agent's: its channel is the one the sends reach
    await stream.start()
    yield channel, stream
    await stream.stop()


async def _taken(stream: Any, most: int, lists: asyncio.Queue[list[Any]], batch_size: int = 1000) -> None:
    settings = Settings(_env_file=None, batch_seconds=LONG_WINDOW, batch_size=batch_size)  # type: ignore[call-arg]
    async for events in coalesced(stream, settings, most=most):
        await lists.put([event.value for event in events])


async def _next(lists: asyncio.Queue[list[Any]]) -> list[Any]:
    return await asyncio.wait_for(lists.get(), WAIT)


async def test_queued_events_go_through_one_step_and_a_lone_one_does_not_wait() -> None:
    async with channel_stream() as (channel, stream):
        lists: asyncio.Queue[list[Any]] = asyncio.Queue()
        for value in range(5):
            await channel.send(value=value)
        taker = asyncio.create_task(_taken(stream, 64, lists))
        try:
            assert await _next(lists) == [0, 1, 2, 3, 4]
            await channel.send(value=9)
            assert await _next(lists) == [9]  # within WAIT, though the window is LONG_WINDOW
        finally:
            taker.cancel()


async def test_a_step_takes_at_most_most_events() -> None:
    async with channel_stream() as (channel, stream):
        lists: asyncio.Queue[list[Any]] = asyncio.Queue()
        taker = asyncio.create_task(_taken(stream, 2, lists))
        try:
            for value in range(5):
                await channel.send(value=value)
            assert [await _next(lists) for _ in range(3)] == [[0, 1], [2, 3], [4]]
        finally:
            taker.cancel()


async def test_a_step_takes_fetched_batches_up_to_the_batch_size_in_records() -> None:
    # A step's events are acknowledged when it ends: a backlog's step once took every queued batch (38,000
    # emails, minutes to settle), and a crash would have replayed all of them.
    async with channel_stream() as (channel, stream):

        def as_fetched_batch(value: Any) -> Any:
            # What Herald's consumer makes of a fetch (adapters.broker.fetched_batches): a message carrying
            # a partition's fetched records; here `value` of them.
            event = stream.current_event
            records = [_Record(offset, None) for offset in range(value)]
            event.message = to_batch_message(event.message.tp, FetchedBatch(records), None, 0)
            return value

        stream.add_processor(as_fetched_batch)  # before coalesced's own, so it sees the records
        lists: asyncio.Queue[list[Any]] = asyncio.Queue()
        for value in (4, 4, 4, 1, 30, 2):
            await channel.send(value=value)
        taker = asyncio.create_task(_taken(stream, 64, lists, batch_size=10))
        try:
            # 4 + 4 + 4 reaches 10; the batch that takes a step past the bound is taken whole, never split.
            assert [await _next(lists) for _ in range(3)] == [[4, 4, 4], [1, 30], [2]]
        finally:
            taker.cancel()
