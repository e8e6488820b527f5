"""The outbox's way to the broker over a test's recording producer: each record handed to its `send`, in
order, as Faust's producer takes them (the real one builds aiokafka record batches instead)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

from adapters.broker.batch_producer import Outgoing
from streams.runtime.outbox import Publish


def publish_each(producer: Any) -> Publish:
    async def publish(records: Sequence[Outgoing]) -> list[Awaitable[Any]]:
        return [await producer.send(r.topic, r.key, r.value, r.partition, None, None) for r in records]

    return publish
