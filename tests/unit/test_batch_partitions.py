"""The batch producer chooses each record's partition as aiokafka's producer does, with the topic's
partition lists built once and a key hashed once per hand-over."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.broker.batch_producer import Outgoing, _Partitions

COUNTS = {"herald.deliver.inapp": 8, "herald.deliver.email": 8, "herald.status": 3, "one": 1, "wide": 12}


class _Metadata:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(COUNTS[topic]))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(COUNTS[topic]))


class _Producer:
    """What `AIOKafkaProducer._partition` reads of its producer."""

    def __init__(self, partitioner: Any) -> None:
        self._metadata = _Metadata()
        self._partitioner = partitioner

    def _partition(self, *args: Any) -> int:
        return int(AIOKafkaProducer._partition(self, *args))


records = st.builds(
    Outgoing,
    topic=st.sampled_from(sorted(COUNTS)),
    key=st.binary(min_size=1, max_size=24) | st.sampled_from([b"u1", b"u2", b"alice"]),
    value=st.just(b"{}"),
    partition=st.none(),
    headers=st.just(()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(records, max_size=60))
def test_each_keyed_record_goes_where_the_producer_would_put_it(batch: list[Outgoing]) -> None:
    producer = _Producer(DefaultPartitioner())
    choose = _Partitions(producer)
    for record in batch * 2:  # every key met again
        expected = producer._partition(record.topic, None, None, None, record.key, record.value)
        assert choose(record) == expected


def test_an_explicit_partition_is_kept_and_another_partitioner_is_asked_every_time() -> None:
    calls: list[bytes] = []

    def last_partition(key: bytes, every: list[int], available: list[int]) -> int:
        calls.append(key)
        return every[-1]

    choose = _Partitions(_Producer(last_partition))
    assert choose(Outgoing("wide", b"k", b"{}", partition=3)) == 3
    assert [choose(Outgoing("wide", b"k", b"{}")) for _ in range(3)] == [11, 11, 11]
    assert calls == [b"k", b"k", b"k"]
