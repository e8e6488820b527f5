"""Writing clients' inbox changes to the commands topic, keyed by user id, for the worker that owns the
user's inbox; it answers each on the feed."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from kernel.errors import InboxUnavailable
from schemas.inbox import InboxCommand


class CommandWriter(Protocol):
    async def write(self, command: InboxCommand) -> None:
        """Make `command` durable, or raise InboxUnavailable."""


class KafkaCommandWriter:
    """One producer, started on the first command, acknowledged by every in-sync replica."""

    def __init__(
        self, bootstrap_servers: list[str], topic: str, *, client_id: str = "herald-gateway"
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def write(self, command: InboxCommand) -> None:
        try:
            producer = await self._started()
            await producer.send_and_wait(self._topic, key=command.user_id.encode(), value=command.to_json())
        except KafkaError as exc:
            raise InboxUnavailable(f"cannot write to {self._topic}: {type(exc).__name__}") from exc

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._bootstrap_servers, acks="all", client_id=self._client_id
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
