"""The worker's composition root: every dependency an agent needs, built in one place from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import faust
import faust.streams as faust_streams
from pydantic import BaseModel

from kernel.settings import Settings
from schemas.base import WireModel
from schemas.channels import Channel
from schemas.status import DeliveryStatus
from streams.ops.metrics import WorkerMetrics
from streams.routing.rendering import TemplateStore
from streams.runtime.deadletters import dead_letter
from streams.runtime.topics import Topics
from streams.state.rules_feed import RuleSource

log = logging.getLogger("herald.worker")

M = TypeVar("M", bound=BaseModel)

# The send acknowledgements a batch is still to wait for (see WorkerContext.batch).
_pending_sends: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "pending_sends", default=None
)


SETTLE_FIRST_DELAY_SECONDS = 0.5
SETTLE_MAX_DELAY_SECONDS = 30.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class WorkerContext:
    settings: Settings
    app: faust.App
    topics: Topics
    metrics: WorkerMetrics
    rules: RuleSource
    templates: TemplateStore
    users: Any  # faust Table: user id -> profile dict
    preferences: Any  # faust Table: user id -> preferences dict
    delivered: Any  # faust Table: recipient -> {notification id: when delivered (epoch seconds)}
    digests: Any  # faust Table: recipient -> {bucket: {rule, due, count, events}}
    throttles: Any  # faust Table: recipient -> {scope key: [send times (epoch seconds)]}
    clock: Callable[[], datetime] = utc_now
    scheduler: Any = None  # streams.scheduling.agents.Scheduler, set once the context exists
    _parsed: dict[int, tuple[dict[str, Any], Any]] = field(default_factory=dict, repr=False)

    def topic(self, name: str) -> Any:
        """A topic declared like Herald's others: raw bytes, the configured partitions."""
        return self.app.topic(
            name,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.settings.partitions,
            replicas=self.settings.replication_factor,
        )

    async def produce(
        self, topic: Any, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None:
        """Hand a record to the producer. Inside `batch()` its acknowledgement is awaited with the rest of the
        batch's; outside, at once. Either way it is acknowledged before the input is, so nothing is lost."""
        name = topic if isinstance(topic, str) else topic.get_topic_name()
        future = await self.app.producer.send(name, key, value, partition, None, None)
        pending = _pending_sends.get()
        if pending is None:
            await future
        else:
            pending.append(future)

    async def send(self, topic: Any, key: str, value: WireModel) -> None:
        await self.produce(topic, key.encode(), value.to_json())

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Produce without waiting on each record; leaving the block waits for all of them (and raises if
        any failed), so a batch is acknowledged only once everything it produced is on the broker."""
        pending: list[Any] = []
        token = _pending_sends.set(pending)
        try:
            yield
        finally:
            _pending_sends.reset(token)
            if pending:
                await asyncio.gather(*pending)

    async def settle(self, agent: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run a batch's `work` in `batch()` and, if what it produced did not reach the broker, run it again
        until it does. An exception must not leave an agent: on the way out Faust acks the batch's messages
        (a known faust-streaming hazard) and they would be lost. Handlers turn bad input into dead letters
        themselves, so what fails here is producing: the broker refusing a record or gone for longer than
        the producer's own retries. Running a batch again repeats only what a crash replay would, and the
        delivered-ids table absorbs that."""
        delay = SETTLE_FIRST_DELAY_SECONDS
        while True:
            try:
                async with self.batch():
                    await work()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.batch_failures.labels(agent=agent).inc()
                log.error(
                    "batch failed, running it again",
                    extra={
                        "agent": agent,
                        "error_class": type(exc).__name__,
                        "error": str(exc)[:500],
                        "retry_in_seconds": delay,
                    },
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, SETTLE_MAX_DELAY_SECONDS)

    async def send_status(self, status: DeliveryStatus) -> None:
        await self.send(self.topics.status, status.recipient, status)

    async def to_dead_letters(self, message: Any, error: BaseException, stage: str) -> None:
        """Park a message that cannot be processed on the DLQ, with the reason, and count it."""
        record = dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            error=error,
            stage=stage,
        )
        await self.produce(self.topics.dlq, message.key, record.to_json())
        self.metrics.dead_letters.labels(stage=stage, reason=record.reason).inc()
        log.warning(
            "dead-lettered",
            extra={
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "stage": stage,
                "reason": record.reason,
                "error_class": record.error_class,
            },
        )

    def parsed(self, model: type[M], stored: dict[str, Any]) -> M:
        """A table value as its model. The directory validated it on the way in, so the parse of each stored
        dict is cached, keyed by the dict itself: a replaced value is a new dict and is parsed afresh."""
        cached = self._parsed.get(id(stored))
        if cached is not None and cached[0] is stored and isinstance(cached[1], model):
            return cached[1]
        value = model.model_validate(stored, strict=False)
        if len(self._parsed) >= 100_000:
            self._parsed.clear()
        self._parsed[id(stored)] = (stored, value)
        return value

    def channel_topic(self, channel: Channel) -> Any:
        return self.topics.delivery[channel]


def bind_event(event: Any) -> None:
    """Make `event` the current one in this task. Faust writes a table key to the changelog partition of
    the current event, kept in a context variable: batches and tasks started with `gather` need it set."""
    faust_streams._current_event.set(weakref.ref(event))
