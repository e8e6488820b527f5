"""The gateway's one way to write to Kafka: a producer started on the first record and acknowledged by every
in-sync replica, so nothing is started for a gateway that never writes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer


class LazyProducer:
    def __init__(self, bootstrap_servers: list[str], *, client_id: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> None:
        """Produce one record and wait for its acknowledgement; aiokafka's KafkaError if it is not taken."""
        producer = await self._started()
        await producer.send_and_wait(topic, key=key, value=value, headers=list(headers) if headers else None)

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
