"""Consumer lag per topic and partition (end offset minus committed offset), queried from the broker by a
background service (streams.ops.services) and exported by a Prometheus collector; plus a gauge of table
sizes fed by callables."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.broker.offsets import end_offsets

log = logging.getLogger(__name__)

LAG = "herald_consumer_lag_messages"
COMMITTED = "herald_consumer_committed_offset"
END = "herald_topic_end_offset"
REFRESHED = "herald_consumer_lag_refreshed_timestamp_seconds"
FAILURES = "herald_consumer_lag_refresh_failures_total"
TABLE_KEYS = "herald_table_keys"


@dataclass(frozen=True)
class PartitionOffsets:
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        # A committed offset past the end is possible for a moment after a truncation; never report < 0.
        return max(self.end - self.committed, 0)


class ConsumerLag(Collector):
    """Holds the latest lag snapshot of one consumer group and exports it; `refresh()` replaces it.

    A scrape only reads the snapshot (collectors are synchronous and must not wait on the broker).
    Every worker of a group reports the whole group, so aggregate with `max by (topic, partition)`.
    `topics` names the topics the group consumes (for a Faust app: `lambda: app.topics.acking_topics`);
    they are listed because some brokers (Tansu) cannot answer "all of a group's offsets". Partitions the
    group has never committed are left out.
    """

    def __init__(
        self,
        bootstrap_servers: Sequence[str],
        group_id: str,
        topics: Callable[[], Iterable[str]],
        registry: CollectorRegistry,
        *,
        request_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bootstrap = list(bootstrap_servers)
        self._group = group_id
        self._topics = topics
        self._timeout = request_timeout
        self._clock = clock
        self._snapshot: tuple[PartitionOffsets, ...] = ()
        self._refreshed_at: float | None = None
        self._failures = 0
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        registry.register(self)

    @property
    def snapshot(self) -> tuple[PartitionOffsets, ...]:
        return self._snapshot

    # --- the broker side -------------------------------------------------------------------------------

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
            await admin.start()
            self._admin = admin
        if self._consumer is None:
            # No group: this consumer only asks for end offsets, it never joins or commits.
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False
            )
            await consumer.start()
            self._consumer = consumer
        return self._admin, self._consumer

    async def refresh(self) -> tuple[PartitionOffsets, ...]:
        """Query the group's committed offsets and the partitions' end offsets once; keep the result."""
        admin, consumer = await self._clients()
        names = sorted(set(self._topics()))
        if not names:
            return self.update([])
        await asyncio.wait_for(consumer.topics(), timeout=self._timeout)  # refreshes the partition lists
        partitions = [
            TopicPartition(name, partition)
            for name in names
            for partition in sorted(consumer.partitions_for_topic(name) or ())
        ]
        if not partitions:  # an empty list would ask for all of the group's offsets
            return self.update([])
        committed = await asyncio.wait_for(
            admin.list_consumer_group_offsets(self._group, partitions=partitions), timeout=self._timeout
        )
        committed = {tp: meta for tp, meta in committed.items() if meta.offset >= 0}
        ends: dict[TopicPartition, int] = {}
        if committed:
            # end_offsets may wait forever for a partition that does not exist: bound it. Checked against
            # a fetch: the embedded broker can answer short of the last records (adapters.broker.offsets).
            ends = await asyncio.wait_for(
                end_offsets(consumer, self._bootstrap, list(committed)), timeout=self._timeout
            )
        return self.update(
            PartitionOffsets(tp.topic, tp.partition, meta.offset, ends[tp])
            for tp, meta in sorted(committed.items())
            if tp in ends
        )

    def update(self, offsets: Iterable[PartitionOffsets]) -> tuple[PartitionOffsets, ...]:
        """Replace the snapshot the next scrape exports."""
        self._snapshot = tuple(offsets)
        self._refreshed_at = self._clock()
        return self._snapshot

    async def refresh_or_count(self) -> None:
        """Refresh; a failure is counted and logged, and the previous snapshot stays exported."""
        try:
            await self.refresh()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failures += 1
            log.warning("consumer lag refresh failed: %r", exc)

    async def aclose(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    # --- the scrape side -------------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families(self._snapshot)

    def _families(self, snapshot: Sequence[PartitionOffsets] = ()) -> list[Metric]:
        labels = ["topic", "partition"]
        lag = GaugeMetricFamily(LAG, "Messages not yet committed by the worker's group", labels=labels)
        committed = GaugeMetricFamily(COMMITTED, "The group's committed offset", labels=labels)
        end = GaugeMetricFamily(END, "The partition's end offset (next offset to be written)", labels=labels)
        for p in snapshot:
            values = [p.topic, str(p.partition)]
            lag.add_metric(values, p.lag)
            committed.add_metric(values, p.committed)
            end.add_metric(values, p.end)
        refreshed = GaugeMetricFamily(REFRESHED, "When consumer lag was last read from the broker")
        if self._refreshed_at is not None:
            refreshed.add_metric([], self._refreshed_at)
        failures = CounterMetricFamily(FAILURES, "Consumer lag queries that failed", value=self._failures)
        return [lag, committed, end, refreshed, failures]


class TableKeys(Collector):
    """`herald_table_keys{table}`: the keys each table holds on this worker, read at scrape time."""

    def __init__(self, sizes: Mapping[str, Callable[[], int]], registry: CollectorRegistry) -> None:
        self._sizes = dict(sizes)
        registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(TABLE_KEYS, "", labels=["table"])]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            TABLE_KEYS,
            "Keys held in each table on this worker: active and standby partitions on the memory store, "
            "active ones estimated by RocksDB on the RocksDB store",
            labels=["table"],
        )
        for table, size in self._sizes.items():
            # A table not yet set up must not fail the whole scrape; its series is left out until it is.
            with contextlib.suppress(Exception):
                family.add_metric([table], size())
        return [family]
