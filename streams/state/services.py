"""The rules feed, a mode service started with the worker: every worker reads the whole compacted rules topic
and routes with the newest valid ruleset, so `herald rules apply` takes effect for the next event."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from mode import Service

from adapters.broker.offsets import end_offsets
from kernel.readiness import READY, Readiness
from streams.state.rules_feed import RULESET_KEY, RuleSource


class RulesFeed(Service):
    """Reads the rules topic with no consumer group, from the beginning: each worker sees every ruleset."""

    def __init__(self, source: RuleSource, bootstrap: list[str], topic: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self._bootstrap = bootstrap
        self._topic = topic
        self.caught_up = asyncio.Event()

    def readiness(self) -> Readiness:
        return READY if self.caught_up.is_set() else Readiness(False, "rules topic not read yet")

    @Service.task
    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partition = TopicPartition(self._topic, 0)
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            end = (await end_offsets(consumer, self._bootstrap, [partition]))[partition]
            if end == 0:
                self.caught_up.set()
            while not self.should_stop:
                batch = await consumer.getmany(partition, timeout_ms=500)
                for record in batch.get(partition, []):
                    if record.key == RULESET_KEY and record.value is not None:
                        self.source.offer(record.value, record.offset)
                    if record.offset + 1 >= end:
                        self.caught_up.set()
        finally:
            await consumer.stop()
