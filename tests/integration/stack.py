"""Running Herald's real processes (worker, gateway) for integration tests, each on its own topics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

ROOT = Path(__file__).resolve().parents[2]
# Shared by the stack's workers and gateways (HERALD_INTERNAL_SECRET).
INTERNAL_SECRET = "internal-" + "s" * 40


@dataclass
class Stack:
    """The environment of one isolated Herald deployment: its own app id and topic names."""

    broker_url: str
    bootstrap: list[str]
    tmp: Path
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update(
            {
                "HERALD_BROKER": self.broker_url,
                "HERALD_APP_ID": f"herald-{self.prefix}",
                "HERALD_PARTITIONS": "4",
                "HERALD_DATA_DIR": str(self.tmp / "data"),
                # As `herald dev` on the embedded broker; tests of the RocksDB store ask for it, and
                # HERALD_TEST_STORE=rocksdb runs every test's workers on it.
                "HERALD_STORE": os.environ.get("HERALD_TEST_STORE", "memory"),
                "HERALD_RULES_FILE": str(ROOT / "examples" / "rules.yaml"),
                "HERALD_TEMPLATES_DIR": str(ROOT / "examples" / "templates"),
                "HERALD_TOPIC_EVENTS": self.topic("events"),
                "HERALD_TOPIC_USERS": self.topic("users"),
                "HERALD_TOPIC_RULES": self.topic("rules"),
                "HERALD_TOPIC_PREFERENCES": self.topic("preferences"),
                "HERALD_TOPIC_PREFERENCES_HISTORY": self.topic("preferences.history"),
                "HERALD_TOPIC_ROUTED": self.topic("routed"),
                "HERALD_TOPIC_INAPP": self.topic("deliver.inapp"),
                "HERALD_TOPIC_EMAIL": self.topic("deliver.email"),
                "HERALD_TOPIC_PUSH": self.topic("deliver.push"),
                "HERALD_TOPIC_SMS": self.topic("deliver.sms"),
                "HERALD_TOPIC_STATUS": self.topic("status"),
                "HERALD_TOPIC_SCHEDULED_PREFIX": self.topic("scheduled"),
                "HERALD_TOPIC_DLQ": self.topic("dlq"),
                "HERALD_INBOX_COMMANDS_TOPIC": self.topic("inbox.commands"),
                "HERALD_INBOX_FEED_TOPIC": self.topic("inbox.feed"),
                "HERALD_INTERNAL_SECRET": INTERNAL_SECRET,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        if "HERALD_WORKER_PORT" in env:
            # A gateway of this stack asks its worker for inboxes unless told otherwise.
            env.setdefault("HERALD_GATEWAY_WORKER_URL", f"http://127.0.0.1:{env['HERALD_WORKER_PORT']}")
        return env

    def spawn(self, *args: str, log_name: str, **env: str) -> subprocess.Popen[bytes]:
        """`herald ARGS` with the stack's settings, and `env` on top (one process's own port, say)."""
        log = open(self.tmp / f"{log_name}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "streams", *args],
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode} before {url} was ready")
            try:
                response = await client.get(url, timeout=1.0)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


async def produce(bootstrap: list[str], topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


async def read_topic(bootstrap: list[str], topic: str, *, until: int, timeout: float = 30.0) -> list[Any]:
    """Read a topic from the beginning (no consumer group) until `until` records arrived or time is up."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        partitions: set[int] | None = None
        while not partitions and time.monotonic() < deadline:
            await consumer.topics()  # refreshes metadata
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await asyncio.sleep(0.2)
        assert partitions, f"topic {topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while len(records) < until and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for items in batch.values():
                records.extend(items)
    finally:
        await consumer.stop()
    return records


async def wait_for_metric(stack: Stack, sample: str, at_least: float, timeout: float = 30.0) -> None:
    url = f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/metrics"
    async with httpx.AsyncClient() as client:
        for _ in range(int(timeout / 0.2)):
            for line in (await client.get(url)).text.splitlines():
                if line.startswith(sample + " ") and float(line.split()[-1]) >= at_least:
                    return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{sample} did not reach {at_least}")


def herald(stack: Stack, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A `herald` command run as users run it (a process of its own) against this stack's settings."""
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
