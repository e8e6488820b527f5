"""Writing users' preference changes to the preferences topic, keyed by user id and marked as coming from the
preference center, exactly as `herald preferences set` writes the CLI's: the worker that owns the user applies
them and records each in the preferences history."""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from kernel.errors import PreferencesUnavailable
from schemas.preferences import SOURCE_HEADER, PreferenceSource, PreferencesUpdate

HEADERS: Final = [(SOURCE_HEADER, PreferenceSource.PREFERENCE_CENTER.value.encode())]


class PreferencesWriter(Protocol):
    async def write(self, update: PreferencesUpdate) -> None:
        """Make `update` durable, or raise PreferencesUnavailable."""


class KafkaPreferencesWriter:
    """One producer, started on the first change, acknowledged by every in-sync replica."""

    def __init__(
        self, bootstrap_servers: list[str], topic: str, *, client_id: str = "herald-gateway-preferences"
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def write(self, update: PreferencesUpdate) -> None:
        try:
            producer = await self._started()
            await producer.send_and_wait(
                self._topic, key=update.user_id.encode(), value=update.to_json(), headers=HEADERS
            )
        except KafkaError as exc:
            raise PreferencesUnavailable(f"cannot write to {self._topic}: {type(exc).__name__}") from exc

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
