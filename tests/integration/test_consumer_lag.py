"""streams/ops/lag.py against a real broker: a consumer group's committed offsets and the partitions' ends."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry

from streams.ops.lag import ConsumerLag, PartitionOffsets
from streams.ops.services import ConsumerLagService
from tests.integration.stack import produce

pytestmark = pytest.mark.integration


async def test_lag_is_end_offset_minus_the_groups_committed_offset(bootstrap_servers: list[str]) -> None:
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    await produce(bootstrap_servers, topic, [(b"k", b"%d" % i) for i in range(10)])  # all on one partition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        busy = next(tp for tp, end in ends.items() if end == 10)
        idle = next(tp for tp in ends if tp != busy)
        consumer.assign([busy, idle])
        await consumer.commit({busy: OffsetAndMetadata(4, ""), idle: OffsetAndMetadata(0, "")})
    finally:
        await consumer.stop()

    registry = CollectorRegistry()
    lag = ConsumerLag(bootstrap_servers, group, lambda: [topic], registry)
    try:
        snapshot = await lag.refresh()
    finally:
        await lag.aclose()
    assert set(snapshot) == {
        PartitionOffsets(topic, busy.partition, committed=4, end=10),
        PartitionOffsets(topic, idle.partition, committed=0, end=0),
    }
    labels = {"topic": topic, "partition": str(busy.partition)}
    assert registry.get_sample_value("herald_consumer_lag_messages", labels) == 6


async def test_the_service_refreshes_until_stopped_and_counts_failures(bootstrap_servers: list[str]) -> None:
    registry = CollectorRegistry()
    lag = ConsumerLag(bootstrap_servers, f"group-{uuid.uuid4().hex[:8]}", lambda: ["no-such-topic"], registry)
    service = ConsumerLagService(lag, interval=0.05)
    await service.start()
    for _ in range(200):
        if registry.get_sample_value("herald_consumer_lag_refreshed_timestamp_seconds"):
            break
        await asyncio.sleep(0.05)
    await asyncio.wait_for(service.stop(), 5)
    assert registry.get_sample_value("herald_consumer_lag_refreshed_timestamp_seconds")
    assert registry.get_sample_value("herald_consumer_lag_refresh_failures_total") == 0

    failures = CollectorRegistry()
    unreachable = ConsumerLag(["127.0.0.1:1"], "g", lambda: ["t"], failures, request_timeout=1)
    service = ConsumerLagService(unreachable, interval=0.05)
    await service.start()
    for _ in range(200):
        if failures.get_sample_value("herald_consumer_lag_refresh_failures_total"):
            break
        await asyncio.sleep(0.05)
    await asyncio.wait_for(service.stop(), 5)
    assert failures.get_sample_value("herald_consumer_lag_refresh_failures_total") >= 1  # type: ignore[operator]
