"""Writing users' preference changes to the preferences topic, keyed by user id and marked as coming from the
preference center, exactly as `herald preferences set` writes the CLI's: the worker that owns the user applies
them and records each in the preferences history."""

from __future__ import annotations

from typing import Final, Protocol

from aiokafka.errors import KafkaError

from gateway.producer import LazyProducer
from kernel.errors import PreferencesUnavailable
from schemas.preferences import SOURCE_HEADER, PreferenceSource, PreferencesUpdate

HEADERS: Final = [(SOURCE_HEADER, PreferenceSource.PREFERENCE_CENTER.value.encode())]


class PreferencesWriter(Protocol):
    async def write(self, update: PreferencesUpdate) -> None:
        """Make `update` durable, or raise PreferencesUnavailable."""


class KafkaPreferencesWriter:
    """Each change acknowledged by every in-sync replica before it is answered."""

    def __init__(
        self, bootstrap_servers: list[str], topic: str, *, client_id: str = "herald-gateway-preferences"
    ) -> None:
        self._topic = topic
        self._producer = LazyProducer(bootstrap_servers, client_id=client_id)

    async def write(self, update: PreferencesUpdate) -> None:
        try:
            await self._producer.send(self._topic, update.user_id.encode(), update.to_json(), HEADERS)
        except KafkaError as exc:
            raise PreferencesUnavailable(f"cannot write to {self._topic}: {type(exc).__name__}") from exc

    async def stop(self) -> None:
        await self._producer.stop()
