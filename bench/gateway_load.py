"""Measurement (5): one gateway process, N WebSocket clients in another, one notification frame per user
per second produced straight to the inbox feed (the worker is not in this path): delivered rate,
Kafka→client latency, RSS per idle socket. A worker runs beside it (each socket's welcome comes from it);
on the first size, the in-app produce → socket latency at low load goes through it (bench.inapp_latency)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import psutil
from prometheus_client import CollectorRegistry
from tqdm import tqdm

from adapters.broker.topics import ensure_topics
from bench.deployment import Deployment
from bench.event_latency import measure_event_latency, rules_env
from bench.feed_records import feed_headers, feed_value, notification, notification_template
from bench.inapp_latency import USERS, measure_inapp_latency
from bench.inapp_stack import InAppStack
from bench.observe import RssSampler, latency_summary
from bench.sizes import Sizes
from bench.workload import fast_producer, user_id
from bench.ws_clients import ClientsProcess
from gateway.feed import FeedRecord
from gateway.feed_kafka import KafkaFeed
from gateway.metrics import GatewayMetrics
from kernel.settings import Settings

SETTLE_SECONDS = 2.0  # after connecting, before reading RSS
GRACE_SECONDS = 5.0  # after the last frame is produced, for the last ones to arrive


async def measure_gateway(
    bootstrap: str, tmp: Path, sizes: Sizes
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The fan-out figures per size, and the in-app latency at low load (measured on the first size)."""
    runs: list[dict[str, Any]] = []
    inapp: dict[str, Any] = {}
    for index, n in enumerate(sizes.gateway_connections):
        run, latency = await _one(bootstrap, tmp, sizes, n, with_inapp=index == 0)
        run["broker_hop_alone"] = await _broker_hop_alone(bootstrap, sizes, n)
        runs.append(run)
        inapp = latency or inapp
    return runs, inapp


async def _broker_hop_alone(bootstrap: str, sizes: Sizes, n: int) -> dict[str, Any]:
    """The limit under feed → client: the same records at the same rate, read by the gateway's own feed reader
    with its default fetch settings, and nothing else running (no gateway, sockets or worker). Latency from a
    record's send stamp to its hand-over."""
    topic = f"gw-alone-{n}-{time.time_ns()}"
    await ensure_topics([bootstrap], [topic], sizes.partitions, 1, compacted=set())
    defaults = Settings.model_fields
    feed = KafkaFeed(
        [bootstrap],
        topic,
        GatewayMetrics(CollectorRegistry()),
        fetch_max_wait_ms=defaults["fetch_max_wait_ms"].default,
        busy_fetch_max_wait_ms=defaults["gateway_busy_fetch_max_wait_ms"].default,
        idle_fetch_max_wait_ms=defaults["idle_fetch_max_wait_ms"].default,
    )
    sink = _StampSink(int(n * sizes.gateway_seconds))
    reader = asyncio.create_task(feed.run(sink))
    try:
        await asyncio.wait_for(sink.positioned_event.wait(), 60)
        await asyncio.to_thread(_produce_feed, bootstrap, topic, n, sizes)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sink.done.wait(), GRACE_SECONDS)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return {"received": len(sink.latencies), "latency": latency_summary(sink.latencies)}


class _StampSink:
    """A FeedSink noting, for each notification, the time from its send stamp to now."""

    def __init__(self, expected: int) -> None:
        self.latencies: list[float] = []
        self.positioned_event = asyncio.Event()
        self.done = asyncio.Event()
        self._expected = expected

    def positioned(self) -> None:
        self.positioned_event.set()

    def lost(self) -> None:
        pass

    def feed(self, records: Sequence[FeedRecord]) -> None:
        now = time.time()
        for record in records:
            sent_at = orjson.loads(record.frame)["notification"]["data"]["sent_at"]
            self.latencies.append(now - sent_at)
        if len(self.latencies) >= self._expected:
            self.done.set()


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def _one(
    bootstrap: str, tmp: Path, sizes: Sizes, n: int, *, with_inapp: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    rules = rules_env(tmp / f"rules-gw{n}")  # events of bench.event_latency, for the first size's worker
    stack = InAppStack(
        Deployment(bootstrap, tmp, prefix=f"gw{n}", partitions=sizes.partitions, extra_env=rules)
    )
    result: dict[str, Any] = {"connections": n}
    inapp: dict[str, Any] = {}
    clients: ClientsProcess | None = None
    log = open(tmp / f"clients-{n}.log", "wb")  # noqa: ASYNC230 - once, before the run
    try:
        await stack.topics()
        result["worker_ready_seconds"] = await stack.start_worker()
        port, gateway, result["gateway_ready_seconds"] = await stack.start_gateway(f"gateway-{n}")
        clients = ClientsProcess(f"ws://127.0.0.1:{port}/ws", stack.jwt_secret, log)
        # One socket first, so the figure per socket is the growth over a gateway already serving one.
        await clients.connect(1, "w")
        await asyncio.sleep(SETTLE_SECONDS)
        one = rss(gateway.pid)
        with tqdm(desc=f"gateway: connecting {n:,}", total=None, leave=False, bar_format="{desc} {elapsed}"):
            opened, welcomed, seconds = await clients.connect(n, "u")
        result.update(connected=opened, welcomed=welcomed, connect_seconds=seconds)
        await asyncio.sleep(SETTLE_SECONDS)
        loaded = rss(gateway.pid)
        result["gateway_rss_one_socket_bytes"] = one
        result["gateway_rss_connected_bytes"] = loaded
        result["rss_per_connection_bytes"] = (loaded - one) / max(1, welcomed)
        sampler = RssSampler(gateway.pid).start()
        cpu_before = psutil.Process(gateway.pid).cpu_times()
        total, offered_seconds = await asyncio.to_thread(_produce_feed, bootstrap, stack.feed, n, sizes)
        received = await clients.wait(total, GRACE_SECONDS)
        cpu_after = psutil.Process(gateway.pid).cpu_times()
        sampler.stop()
        seen = await clients.dump(tmp / f"clients-{n}.json")
        cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        result.update(
            offered=total,
            offered_per_second=total / offered_seconds,
            received=received,
            gateway_peak_rss_bytes=sampler.peak,
            gateway_cpu_us_per_message=cpu * 1e6 / max(1, received),
            close_codes=seen["close_codes"],
        )
        latencies: list[float] = seen["latencies"]
        if with_inapp:
            inapp = await measure_inapp_latency(stack, clients, sizes, tmp)
            users = [f"lat{i}" for i in range(USERS)]  # the sockets measure_inapp_latency opened
            inapp["from_event"] = await measure_event_latency(
                stack, clients, users, sizes.inapp_latency_seconds, tmp
            )
        if gateway.poll() is not None:
            raise RuntimeError(f"the gateway exited with {gateway.returncode}")
    finally:
        if clients is not None:
            clients.stop()
        log.close()
        stack.stop()
    result["delivered_fraction"] = result["received"] / max(1, result["offered"])
    # Delivered within the offered window plus the grace, as a rate over the offered window.
    result["messages_per_second"] = result["delivered_fraction"] * result["offered_per_second"]
    result["latency"] = latency_summary(latencies)
    result["cdf_ms"] = sorted(x * 1000 for x in latencies)
    return result, inapp


def _produce_feed(bootstrap: str, topic: str, n: int, sizes: Sizes) -> tuple[int, float]:
    """One notification frame per user per second for `gateway_seconds`, as the worker writes them: user
    u<i>'s k-th frame has sequence k (above the 0 its welcome said). Returns (frames, seconds)."""
    template = notification_template()
    producer = fast_producer(bootstrap)
    total = int(n * sizes.gateway_seconds)
    began = time.monotonic()
    sent = 0
    with tqdm(total=total, desc=f"gateway: {n:,}/s", unit="msg", leave=False) as bar:
        while sent < total:
            due = min(total, int((time.monotonic() - began) * n) + 1)
            while sent < due:
                uid = user_id(sent % n)
                seq = sent // n + 1
                raw = notification(template, sent, uid, time.time())
                value = feed_value(raw, seq)
                while True:
                    try:
                        producer.produce(topic, value, uid.encode(), headers=feed_headers(seq))
                        break
                    except BufferError:
                        producer.poll(0.01)
                sent += 1
            producer.poll(0)
            bar.update(sent - bar.n)
            time.sleep(0.005)
    producer.flush(30)
    return total, time.monotonic() - began
