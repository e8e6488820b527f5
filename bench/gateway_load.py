"""Measurement (5): one gateway process, N WebSocket clients in another, one in-app notification per user per
second produced straight to the in-app topic: delivered rate, Kafka→client latency, RSS per socket."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
from tqdm import tqdm

from adapters.broker.embedded import free_port
from adapters.broker.topics import ensure_topics
from bench.deployment import Deployment, wait_http_ok
from bench.observe import RssSampler, latency_summary
from bench.sizes import Sizes
from bench.workload import fast_producer, user_id
from schemas.notifications import InAppNotification


def _template() -> dict[str, Any]:
    now = datetime.now(UTC)
    template: dict[str, Any] = orjson.loads(
        InAppNotification(
            notification_id="ntf_x",
            event_id="evt_x",
            event_type="bench.fanout",
            recipient="u0",
            occurred_at=now,
            created_at=now,
            title="Hello",
            body="bench",
        ).to_json()
    )
    return template


async def measure_gateway(bootstrap: str, tmp: Path, sizes: Sizes) -> list[dict[str, Any]]:
    return [await _one(bootstrap, tmp, sizes, n) for n in sizes.gateway_connections]


async def _one(bootstrap: str, tmp: Path, sizes: Sizes, n: int) -> dict[str, Any]:
    dep = Deployment(bootstrap, tmp, prefix=f"gw{n}", partitions=sizes.partitions)
    secret = secrets.token_hex(32)
    port = free_port()
    inapp = dep.topic("deliver.inapp")
    await ensure_topics([bootstrap], [inapp], sizes.partitions, 1, compacted=set())
    env = {**dep.env, "HERALD_JWT_SECRET": secret, "HERALD_GATEWAY_PORT": str(port)}
    gateway = dep.spawn("streams", "gateway", log_name=f"gateway-{n}", env=env)
    ready, out = tmp / f"clients-{n}.ready", tmp / f"clients-{n}.json"
    result: dict[str, Any] = {"connections": n}
    clients = None
    try:
        await wait_http_ok(f"http://127.0.0.1:{port}/readyz", gateway, timeout=60)
        await asyncio.sleep(1.0)
        idle = int(psutil.Process(gateway.pid).memory_info().rss)
        clients = dep.spawn(
            "bench.ws_clients",
            f"ws://127.0.0.1:{port}/ws",
            str(n),
            secret,
            str(ready),
            str(out),
            log_name=f"clients-{n}",
        )
        with tqdm(
            desc=f"gateway: connecting {n:,}", total=None, leave=False, bar_format="{desc} {elapsed}"
        ) as bar:
            while not ready.exists() and clients.poll() is None:
                await asyncio.sleep(0.2)
                bar.update(0)
        connected, connect_seconds = ready.read_text().split()
        result["connected"] = int(connected)
        result["connect_seconds"] = float(connect_seconds)
        await asyncio.sleep(1.0)
        loaded = int(psutil.Process(gateway.pid).memory_info().rss)
        result["gateway_rss_idle_bytes"] = idle
        result["gateway_rss_connected_bytes"] = loaded
        result["rss_per_connection_bytes"] = (loaded - idle) / max(1, int(connected))
        rss = RssSampler(gateway.pid).start()
        template = _template()
        producer = fast_producer(bootstrap)
        total = int(n * sizes.gateway_seconds)
        began = time.monotonic()
        sent = 0
        with tqdm(total=total, desc=f"gateway: {n:,}/s", unit="msg", leave=False) as bar:
            while sent < total:
                due = min(total, int((time.monotonic() - began) * n) + 1)
                while sent < due:
                    uid = user_id(sent % n)
                    template.update(
                        notification_id=f"ntf_{sent}", recipient=uid, data={"sent_at": time.time()}
                    )
                    while True:
                        try:
                            producer.produce(inapp, orjson.dumps(template), uid.encode())
                            break
                        except BufferError:
                            producer.poll(0.01)
                    sent += 1
                producer.poll(0)
                bar.update(sent - bar.n)
                await asyncio.sleep(0.01)
        producer.flush(30)
        offered_seconds = time.monotonic() - began
        await asyncio.sleep(3.0)
        rss.stop()
        result["gateway_peak_rss_bytes"] = rss.peak
        result["offered_per_second"] = total / offered_seconds
        result["offered"] = total
    finally:
        if clients is not None:
            dep.stop(clients)
        dep.stop(gateway)
    latencies: list[float] = orjson.loads(out.read_bytes())["latencies"] if out.exists() else []
    result["received"] = len(latencies)
    result["delivered_fraction"] = len(latencies) / max(1, int(result.get("offered", 1)))
    # Delivered within the offered window plus 3 s of grace, as a rate over the offered window.
    result["messages_per_second"] = result["delivered_fraction"] * float(
        result.get("offered_per_second", 0.0)
    )
    result["latency"] = latency_summary(latencies)
    result["cdf_ms"] = sorted(x * 1000 for x in latencies)
    return result
