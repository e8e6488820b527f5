"""Writing clients' inbox changes to the commands topic, keyed by user id, for the worker that owns the
user's inbox; it answers each on the feed."""

from __future__ import annotations

from typing import Protocol

from aiokafka.errors import KafkaError

from gateway.producer import LazyProducer
from kernel.errors import InboxUnavailable
from schemas.inbox import InboxCommand


class CommandWriter(Protocol):
    async def write(self, command: InboxCommand) -> None:
        """Make `command` durable, or raise InboxUnavailable."""


class KafkaCommandWriter:
    """Each command acknowledged by every in-sync replica before it is answered."""

    def __init__(
        self, bootstrap_servers: list[str], topic: str, *, client_id: str = "herald-gateway"
    ) -> None:
        self._topic = topic
        self._producer = LazyProducer(bootstrap_servers, client_id=client_id)

    async def write(self, command: InboxCommand) -> None:
        try:
            await self._producer.send(self._topic, command.user_id.encode(), command.to_json())
        except KafkaError as exc:
            raise InboxUnavailable(f"cannot write to {self._topic}: {type(exc).__name__}") from exc

    async def stop(self) -> None:
        await self._producer.stop()
