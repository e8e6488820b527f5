"""Measurement (5): one gateway process, N WebSocket clients in another, one notification frame per user
per second produced straight to the inbox feed (the worker is not in this path): delivered rate,
Kafka→client latency, RSS per idle socket. A worker runs beside it (each socket's welcome comes from it);
on the first size, the in-app produce → socket latency at low load goes through it (bench.inapp_latency)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psutil
from tqdm import tqdm

from bench.deployment import Deployment
from bench.event_latency import measure_event_latency, rules_env
from bench.feed_records import feed_headers, feed_value, notification, notification_template
from bench.inapp_latency import USERS, measure_inapp_latency
from bench.inapp_stack import InAppStack
from bench.observe import RssSampler, latency_summary
from bench.sizes import Sizes
from bench.workload import fast_producer, user_id
from bench.ws_clients import ClientsProcess

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
        runs.append(run)
        inapp = latency or inapp
    return runs, inapp


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
