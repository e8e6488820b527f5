"""Writing inbox state changes to the compacted inbox topic, which every gateway instance reads back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from kernel.errors import InboxUnavailable
from schemas.inbox import InboxStateChange


class InboxWriter(Protocol):
    async def write(self, changes: Sequence[InboxStateChange]) -> None:
        """Make `changes` durable, or raise InboxUnavailable."""


class KafkaInboxWriter:
    """Produces each change keyed by its register, so compaction keeps the latest per register."""

    def __init__(self, bootstrap_servers: list[str], topic: str, *, timeout_seconds: float = 10.0) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._timeout = timeout_seconds
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def write(self, changes: Sequence[InboxStateChange]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                producer = await self._started()
                futures = [
                    await producer.send(self._topic, key=change.key(), value=change.to_json())
                    for change in changes
                ]
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError) as exc:
            raise InboxUnavailable(f"cannot write to {self._topic}: {type(exc).__name__}") from exc

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._bootstrap_servers, acks="all", client_id="herald-gateway"
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
