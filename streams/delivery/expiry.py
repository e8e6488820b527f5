"""The delivered-ids table's expiry: entries past the retention are deleted, in memory and with a tombstone
on the changelog (so compaction drops them and a recovering worker never reads them back), a chunk at a time
between which the event loop serves the agents."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from streams.delivery.dedup import is_expired, recipient_of
from streams.runtime.store_keys import walk_keys
from streams.state.directory import home_partition

CHUNK = 2_000  # keys looked at between two turns of the event loop


class ChangelogTable(Protocol):
    """What the sweep needs of a Faust table: its store and a way to its changelog."""

    @property
    def data(self) -> Any: ...

    def send_changelog(
        self, partition: int, key: Any, value: Any, value_serializer: str | None = None
    ) -> Awaitable[Any]: ...


@dataclass
class DedupExpiry:
    table: ChangelogTable
    owned: Callable[[], Collection[int]]  # the partitions whose changelog this worker writes now
    partitions: int
    retention_seconds: float
    clock: Callable[[], float]  # epoch seconds

    async def sweep(self) -> int:
        """Delete what is past the retention on the owned partitions; returns how many entries went.

        A key's partition is its recipient's, where Herald keys each recipient's notifications and so where
        the delivery that wrote it wrote its changelog. Entries of partitions owned by another worker now
        (a memory store keeps what it once held) are left to that worker."""
        now = self.clock()
        removed = 0
        keys = walk_keys(self.table.data)
        while chunk := list(itertools.islice(keys, CHUNK)):
            owned = self.owned()
            sends = []
            # No await in this loop: a delivery cannot rewrite a key between its check and its deletion.
            for key in chunk:
                value = self.table.data.get(key)
                if value is None or not is_expired(value, now, self.retention_seconds):
                    continue
                partition = home_partition(recipient_of(key), self.partitions)
                if partition not in owned:
                    continue
                self.table.data.pop(key, None)
                # value_serializer="raw" and no value: a real tombstone, as the outbox writes a delete.
                sends.append(self.table.send_changelog(partition, key, None, value_serializer="raw"))
            if sends:
                await asyncio.gather(*sends)
                removed += len(sends)
            await asyncio.sleep(0)
        return removed
