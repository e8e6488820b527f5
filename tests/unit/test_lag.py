"""streams/ops/lag.py, scrape side: the exported lag, offsets and table sizes (the broker side is in
tests/integration/test_consumer_lag.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from streams.ops.lag import ConsumerLag, PartitionOffsets, TableKeys


def test_lag_is_end_minus_committed_per_topic_and_partition() -> None:
    registry = CollectorRegistry()
    lag = ConsumerLag(["127.0.0.1:1"], "herald", lambda: [], registry, clock=lambda: 1700000000.0)
    assert registry.get_sample_value("herald_consumer_lag_messages", {"topic": "t", "partition": "0"}) is None
    lag.update([PartitionOffsets("t", 0, committed=3, end=10), PartitionOffsets("t", 1, committed=7, end=5)])
    value = registry.get_sample_value
    assert value("herald_consumer_lag_messages", {"topic": "t", "partition": "0"}) == 7
    assert value("herald_consumer_lag_messages", {"topic": "t", "partition": "1"}) == 0  # never negative
    assert value("herald_consumer_committed_offset", {"topic": "t", "partition": "0"}) == 3
    assert value("herald_topic_end_offset", {"topic": "t", "partition": "0"}) == 10
    assert value("herald_consumer_lag_refreshed_timestamp_seconds") == 1700000000.0
    assert value("herald_consumer_lag_refresh_failures_total") == 0


def test_table_keys_are_read_at_scrape_time() -> None:
    registry = CollectorRegistry()
    users: dict[str, object] = {}
    TableKeys({"users": lambda: len(users)}, registry)
    assert registry.get_sample_value("herald_table_keys", {"table": "users"}) == 0
    users.update(alice=1, bob=2)
    assert b'herald_table_keys{table="users"} 2.0' in generate_latest(registry)
