"""Durable delays: records wait on fixed-delay tier topics instead of in memory, and hop down the tiers
until they are due. Every record of a tier waits the same time, so a partition's head is always the first
due and waiting on it never holds back a record that is due sooner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from functools import partial
from typing import Any

from pydantic import ValidationError

from kernel.errors import InvalidEvent
from schemas.base import describe_validation_error
from schemas.scheduled import Scheduled
from streams.runtime.context import WorkerContext

TIERS_SECONDS = (1, 5, 30, 300, 3600)


def tier_for(remaining_seconds: float) -> int:
    """The longest tier that does not overshoot; the shortest for what is due within a second."""
    fitting = [tier for tier in TIERS_SECONDS if tier <= remaining_seconds]
    return max(fitting) if fitting else TIERS_SECONDS[0]


def tier_topic_name(prefix: str, tier: int) -> str:
    return f"{prefix}.{tier}s"


def tier_topic_names(prefix: str) -> list[str]:
    return [tier_topic_name(prefix, tier) for tier in TIERS_SECONDS]


class Scheduler:
    def __init__(self, ctx: WorkerContext, targets: Iterable[Any]) -> None:
        self.ctx = ctx
        prefix = ctx.settings.topic_scheduled_prefix
        self.tiers = {tier: ctx.topic(tier_topic_name(prefix, tier)) for tier in TIERS_SECONDS}
        # Only Herald's own topics may be targets: a record cannot be scheduled into an arbitrary topic.
        self.targets = {topic.get_topic_name(): topic for topic in targets}

    async def schedule(self, due_at: datetime, target: Any, key: bytes, value: bytes, reason: str) -> None:
        record = Scheduled.wrap(due_at, target.get_topic_name(), key, value, reason)
        await self._place(record, key)
        self.ctx.metrics.scheduled.labels(reason=reason).inc()

    async def _place(self, record: Scheduled, key: bytes) -> None:
        remaining = (record.due_at - self.ctx.clock()).total_seconds()
        await self.ctx.produce(self.tiers[tier_for(remaining)], key, record.to_json())

    def register(self) -> None:
        for tier, topic in self.tiers.items():
            self.ctx.app.agent(topic, name=f"herald.scheduled.{tier}s")(self._agent(tier))

    def _agent(self, tier: int) -> Any:
        async def run(stream: Any) -> AsyncIterator[None]:
            async for event in stream.events():
                await self.ctx.settle(f"scheduled.{tier}s", partial(self._release, tier, event.message))
                yield None

        return run

    async def _release(self, tier: int, message: Any) -> None:
        try:
            await self._handle(tier, message)
        except Exception as exc:
            await self.ctx.to_dead_letters(message, exc, stage="scheduler")

    async def _handle(self, tier: int, message: Any) -> None:
        try:
            record = Scheduled.model_validate_json(message.value)
        except ValidationError as exc:
            raise InvalidEvent(describe_validation_error(exc), reason="invalid_scheduled") from None
        target = self.targets.get(record.target)
        if target is None:
            raise InvalidEvent(
                f"{record.target!r} is not a topic records may be scheduled into", reason="invalid_scheduled"
            )
        now = self.ctx.clock()
        waited_until = message.timestamp + tier
        wake = min(waited_until, record.due_at.timestamp())
        if wake > now.timestamp():
            await asyncio.sleep(wake - now.timestamp())
        if (record.due_at - self.ctx.clock()).total_seconds() > 0.05:
            await self._place(record, message.key)  # not yet: down to a shorter tier
            return
        await self.ctx.produce(target, record.key, record.value)
        self.ctx.metrics.released.labels(reason=record.reason).inc()
