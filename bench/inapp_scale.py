"""Measurement (issue 15, `--only inapp-scale`): the in-app side at scale, one gateway process at a time,
clients in their own processes.

1. A gateway's start (spawn → /readyz 200) with an empty feed, then with `scale_retained` records on the
   in-app topic and as many on the feed: as `herald gateway` starts (`python -m streams gateway`, which
   imports Faust's command line first) and through `bench.gateway_entry` (the same `serve`, without it).
2. Its memory beside feed traffic for users without sockets: the same records for few users, then for many
   (`scale_users`), with `scale_idle_connections` sockets open: peak and settled RSS.
3. The most sockets it holds (`scale_connections` asked), each then sent one frame: RSS per idle socket.

The worker (it answers each socket's welcome) reads its own in-app topic, not the one holding the retained
records, so it does not spend the phase building their inboxes; it shares the feed and commands topics."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import psutil

from adapters.broker.embedded import free_port
from bench.deployment import Deployment, wait_http_ok
from bench.feed_records import (
    Headers,
    feed_headers,
    feed_value,
    notification,
    notification_template,
    retained_feed,
    retained_inapp,
)
from bench.inapp_stack import InAppStack
from bench.observe import RssSampler, latency_summary
from bench.sizes import Sizes
from bench.workload import fast_producer, produce_all
from bench.ws_clients import ClientsProcess

SETTLE_SECONDS = 3.0
PER_CLIENT_PROCESS = 10_000  # sockets per client process (each process has the same open-files limit)
FeedRecord = tuple[str, int | None, bytes, bytes, Headers]


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


STAMP = re.compile(r'"ts": "([^"]+)"')


def _stamp(log: str, text: str) -> float | None:
    """When the first line holding `text` was logged (the gateway logs JSON lines with a `ts`)."""
    for line in log.splitlines():
        found = STAMP.search(line) if text in line else None
        if found:
            return datetime.fromisoformat(found.group(1).replace("Z", "+00:00")).timestamp()
    return None


def positioning_seconds(log: str) -> float | None:
    """From the server's start to the feed's being positioned, from the gateway's own log lines."""
    started, ready = _stamp(log, "Started server process"), _stamp(log, "gateway feed ready")
    return None if started is None or ready is None else ready - started


async def measure_inapp_scale(bootstrap: str, tmp: Path, sizes: Sizes) -> dict[str, Any]:
    dep = Deployment(bootstrap, tmp, prefix="scale", partitions=sizes.partitions)
    stack = InAppStack(dep)
    result: dict[str, Any] = {"retained": sizes.scale_retained, "partitions": sizes.partitions}
    logs: list[IO[bytes]] = []
    clients: list[ClientsProcess] = []

    def new_clients(port: int, name: str) -> ClientsProcess:
        logs.append(open(tmp / f"{name}.log", "wb"))
        process = ClientsProcess(f"ws://127.0.0.1:{port}/ws", stack.jwt_secret, logs[-1])
        clients.append(process)
        return process

    try:
        await stack.topics()
        worker_env = {**dep.env, "HERALD_TOPIC_INAPP": dep.topic("deliver.inapp.worker")}
        result["worker_ready_seconds"] = await stack.start_worker(worker_env)
        result["start_empty"] = await _starts(stack, "empty")
        began = time.monotonic()
        await asyncio.to_thread(_retain, stack, sizes)
        result["retain_seconds"] = time.monotonic() - began
        result["start_retained"] = await _starts(stack, "retained", keep=True)
        port = next(iter(stack.gateways))
        gateway = stack.gateways[port]
        probe = new_clients(port, "clients-probe")
        result["probe_welcomed"] = (await probe.connect(1, "w"))[1]
        result["users"] = await _users(stack, gateway.pid, new_clients(port, "clients-idle"), sizes)
        for client in clients:
            client.stop()
        stack.stop_gateway(port)
        result["connections"] = await _connections(stack, sizes, new_clients)
    finally:
        for client in clients:
            client.stop()
        for log in logs:
            log.close()
        stack.stop()
    return result


async def _starts(stack: InAppStack, label: str, *, keep: bool = False) -> dict[str, Any]:
    """Spawn → /readyz for `herald gateway` and for `bench.gateway_entry`; with `keep` the former runs on."""
    port, _, herald = await stack.start_gateway(f"gateway-{label}")
    out = {
        "herald_gateway_seconds": herald,
        "positioning_seconds": positioning_seconds(stack.dep.log(f"gateway-{label}")),
    }
    if not keep:
        stack.stop_gateway(port)
    entry_port = free_port()
    name = f"gateway-entry-{label}"
    process = stack.dep.spawn("bench.gateway_entry", log_name=name, env=stack.gateway_env(entry_port))
    try:
        out["gateway_entry_seconds"] = await wait_http_ok(
            f"http://127.0.0.1:{entry_port}/readyz", process, 120
        )
    finally:
        stack.dep.stop(process)
    return out


def _retain(stack: InAppStack, sizes: Sizes) -> None:
    producer = fast_producer(stack.dep.bootstrap)
    produce_all(producer, retained_inapp(stack.inapp, sizes.scale_retained, sizes.scale_users))
    produce_all(producer, retained_feed(stack.feed, sizes.scale_retained, sizes.scale_users))


def _traffic(topic: str, records: int, users: int, prefix: str) -> Iterator[FeedRecord]:
    """`records` feed records over `users` users (none of them with a socket)."""
    template = notification_template()
    now = time.time()
    for k in range(records):
        user = f"{prefix}{k % users}"
        seq = k // users + 1
        raw = notification(template, k, user, now, run=prefix)
        yield topic, None, user.encode(), feed_value(raw, seq), feed_headers(seq)


def _sentinels(topic: str, partitions: int, seq: int) -> Iterator[FeedRecord]:
    """One record on each partition, after the traffic, for a user with a socket (u<p>): when every one has
    arrived, the gateway has read all the traffic."""
    template = notification_template()
    for p in range(partitions):
        user = f"u{p}"
        raw = notification(template, p, user, time.time(), run=f"sentinel{seq}")
        yield topic, p, user.encode(), feed_value(raw, seq), feed_headers(seq)


async def _users(stack: InAppStack, pid: int, idle: ClientsProcess, sizes: Sizes) -> dict[str, Any]:
    n = sizes.scale_idle_connections
    _, welcomed, _ = await idle.connect(n, "u")
    await asyncio.sleep(SETTLE_SECONDS)
    out: dict[str, Any] = {"sockets": welcomed, "records": sizes.scale_records, "rss_before_bytes": rss(pid)}
    partitions = stack.dep.partitions
    variants = (("few", n, "f"), ("many", sizes.scale_users, "m"))
    for index, (name, users, prefix) in enumerate(variants):
        sampler = RssSampler(pid, interval=0.05).start()
        cpu = psutil.Process(pid).cpu_times()
        began = time.monotonic()

        def produce(users: int = users, prefix: str = prefix, seq: int = index + 1) -> None:
            producer = fast_producer(stack.dep.bootstrap)
            produce_all(producer, _traffic(stack.feed, sizes.scale_records, users, prefix))
            produce_all(producer, _sentinels(stack.feed, partitions, seq))

        await asyncio.to_thread(produce)
        received = await idle.wait(partitions * (index + 1), 120)
        read_seconds = time.monotonic() - began
        after = psutil.Process(pid).cpu_times()
        await asyncio.sleep(SETTLE_SECONDS)
        sampler.stop()
        out[name] = {
            "users": users,
            "sentinels_received": received - partitions * index,
            "seconds_to_read": read_seconds,
            "records_per_second": sizes.scale_records / read_seconds,
            "gateway_cpu_seconds": (after.user + after.system) - (cpu.user + cpu.system),
            "peak_rss_bytes": sampler.peak,
            "settled_rss_bytes": rss(pid),
        }
    return out


async def _connections(stack: InAppStack, sizes: Sizes, new_clients: Any) -> dict[str, Any]:
    """A fresh gateway: RSS with one socket, then with as many more as it takes of `scale_connections`."""
    port, gateway, _ = await stack.start_gateway("gateway-connections")
    probe: ClientsProcess = new_clients(port, "clients-conn-probe")
    await probe.connect(1, "w")
    await asyncio.sleep(SETTLE_SECONDS)
    one = rss(gateway.pid)
    asked = sizes.scale_connections
    groups = math.ceil(asked / PER_CLIENT_PROCESS)
    began = time.monotonic()
    processes: list[ClientsProcess] = [new_clients(port, f"clients-conn-{g}") for g in range(groups)]
    sizes_of = [min(PER_CLIENT_PROCESS, asked - g * PER_CLIENT_PROCESS) for g in range(groups)]
    answers = await asyncio.gather(
        *(p.connect(k, f"c{g}-") for g, (p, k) in enumerate(zip(processes, sizes_of, strict=True)))
    )
    connect_seconds = time.monotonic() - began
    opened = sum(a[0] for a in answers)
    welcomed = sum(a[1] for a in answers)
    await asyncio.sleep(SETTLE_SECONDS)
    held_rss = rss(gateway.pid)
    fds = psutil.Process(gateway.pid).num_fds()
    # One frame to every user asked for: the welcomed sockets should each get theirs.
    users = [f"c{g}-{i}" for g, k in enumerate(sizes_of) for i in range(k)]

    def produce() -> None:
        template = notification_template()
        records = (
            (
                stack.feed,
                None,
                u.encode(),
                feed_value(notification(template, i, u, time.time(), run="c"), 1),
                feed_headers(1),
            )
            for i, u in enumerate(users)
        )
        produce_all(fast_producer(stack.dep.bootstrap), records)

    sent_at = time.monotonic()
    await asyncio.to_thread(produce)
    received = await asyncio.gather(*(p.wait(k, 60) for p, k in zip(processes, sizes_of, strict=True)))
    deliver_seconds = time.monotonic() - sent_at
    statuses = await asyncio.gather(*(p.ask("status") for p in processes))
    latencies: list[float] = []
    codes: dict[str, int] = {}
    for g, p in enumerate(processes):
        seen = await p.dump(stack.dep.tmp / f"clients-conn-{g}.json")
        latencies += seen["latencies"]
        for code, count in seen["close_codes"].items():
            codes[code] = codes.get(code, 0) + count
    alive = gateway.poll() is None
    return {
        "asked": asked,
        "opened": opened,
        "welcomed": welcomed,
        "connect_seconds": connect_seconds,
        "held_after_delivery": sum(int(s[1]) for s in statuses),
        "gateway_open_fds": fds,
        "rss_one_socket_bytes": one,
        "rss_connected_bytes": held_rss,
        "rss_per_connection_bytes": (held_rss - one) / max(1, welcomed),
        "delivered": sum(received),
        "deliver_seconds": deliver_seconds,
        "delivery_latency": latency_summary(latencies),
        "close_codes": codes,
        "gateway_alive": alive,
    }
