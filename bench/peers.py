"""Peers in the bench: Herald's own routing steps run by quixstreams and by a plain aiokafka batch loop over
one backlog (and alone, without Kafka), and a bare loop of Herald's provider calls against the same sinks
(the delivery ceiling); each set beside the pipeline's figures of the same run."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
from tqdm import tqdm

from adapters.broker.embedded import free_port
from adapters.broker.topics import ensure_topics
from bench.deployment import Deployment, wait_http_ok
from bench.observe import Arrivals, steady_rate, watch_topics
from bench.pipeline import load_tables, provider_env
from bench.sizes import Sizes
from bench.workload import backlog, fast_producer, produce_all

# Each routing peer: the module that runs it (`python -m MODULE BOOTSTRAP SOURCE EXPECTED USERS OUT`).
ROUTING_PEERS = {"aiokafka": "bench.peer_aiokafka", "quixstreams": "bench.peer_quix"}
CEILING_CHANNELS = ("email", "sms")  # the channels the pipeline delivers through providers
OUTPUT_TOPICS = ("deliver.inapp", "deliver.email", "deliver.push", "deliver.sms", "status")


class PeerRun:
    """One peer's deployment: its own output topics, the worker's environment, its process and its log."""

    def __init__(self, bootstrap: str, tmp: Path, sizes: Sizes, rules: Path, templates: Path, run: str):
        self.dep = Deployment(bootstrap, tmp, prefix="peer", partitions=sizes.partitions, run=run)
        self.smtp_port, self.http_port = free_port(), free_port()
        self.env = {
            **self.dep.env,
            **provider_env(self.dep, rules, templates, self.smtp_port, self.http_port),
        }
        self.out = tmp / f"peer-{run}.json"

    async def create_topics(self) -> None:
        names = [self.dep.topic(name) for name in OUTPUT_TOPICS]
        await ensure_topics([self.dep.bootstrap], names, self.dep.partitions, 1, compacted=set())

    async def run(self, module: str, *args: str, label: str, after: tuple[str, ...] = ()) -> dict[str, Any]:
        """`python -m module *args RESULT.json *after`, to its end; what it wrote to RESULT.json."""
        log_name = f"peer-{self.dep.run}"
        process = self.dep.spawn(module, *args, str(self.out), *after, log_name=log_name, env=self.env)
        with tqdm(desc=label, total=None, leave=False, bar_format="{desc}: {elapsed}") as bar:
            while process.poll() is None:
                await asyncio.sleep(0.2)
                bar.update(0)
        if process.returncode != 0:
            raise RuntimeError(f"{label} failed:\n{self.dep.log(log_name)[-3000:]}")
        result: dict[str, Any] = orjson.loads(self.out.read_bytes())
        return result


def _cpu_per_event(result: dict[str, Any]) -> float | None:
    """Microseconds of the process's CPU time per event; None if it recorded none, or none that could be
    told from nothing (Herald's worker is read from /proc, in 10 ms ticks: a tiny backlog may be routed within
    one, or before the worker reports ready)."""
    cpu = result.get("cpu_seconds")
    return None if not cpu or not result.get("events") else cpu / result["events"] * 1e6


def _process_rate(result: dict[str, Any]) -> float:
    """Events per second by the peer's own clock: first batch in to the last outputs acknowledged."""
    return float(result["events"]) / float(result["seconds"])


async def route_with(peer: PeerRun, name: str, source: str, sizes: Sizes) -> dict[str, Any]:
    """Run one routing peer over the backlog on `source`: its rate by its own clock (first batch in to the
    last outputs acknowledged), and as the pipeline's is taken (the steady 10%-90% window of its in-app
    records arriving, read by an observer)."""
    await peer.create_topics()
    arrivals, stop = Arrivals(), asyncio.Event()
    inapp = peer.dep.topic("deliver.inapp")
    watcher = asyncio.create_task(watch_topics(peer.dep.bootstrap, [inapp], lambda r: True, arrivals, stop))
    try:
        args = (peer.dep.bootstrap, source, str(sizes.peer_events), str(sizes.users))
        result = await peer.run(ROUTING_PEERS[name], *args, label=f"peer {name}")
        deadline = time.monotonic() + 10
        while len(arrivals.times) < sizes.peer_events and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await watcher
    result["events_per_second"] = _process_rate(result)
    result["inapp_records_seen"] = len(arrivals.times)
    # The pipeline's method, for comparison; with a few hundred events (tiny) it sees a handful of flushes
    # and means little, hence the peer's own clock above.
    result["observed_events_per_second"] = steady_rate(arrivals.times)
    return result


async def route_with_herald(
    bootstrap: str, tmp: Path, sizes: Sizes, rules: Path, templates: Path, source: str
) -> dict[str, Any]:
    """Herald's routing stage alone over the same backlog: a worker with its routing and state agents only
    (`BENCH_ROUTING_ONLY`, bench/worker.py), its users' tables loaded as the pipeline's are. Its rate is taken
    as the pipeline's routing figure is, and as each peer's `observed_events_per_second`: the steady 10%-90%
    window of its in-app records arriving. The pipeline's figure is the same stage while the worker also
    delivers on the same core."""
    dep = Deployment(bootstrap, tmp, prefix="hpeer", partitions=sizes.partitions, run="alone")
    await load_tables([dep], sizes.users, f"{sizes.users:,} users, routing alone")
    env = {
        **dep.env,
        **provider_env(dep, rules, templates, free_port(), free_port()),
        "HERALD_TOPIC_EVENTS": source,
        "BENCH_ROUTING_ONLY": "1",
    }
    arrivals, stop = Arrivals(), asyncio.Event()
    inapp = dep.topic("deliver.inapp")
    await ensure_topics([bootstrap], [inapp], sizes.partitions, 1, compacted=set())
    watcher = asyncio.create_task(watch_topics(bootstrap, [inapp], lambda r: True, arrivals, stop))
    worker = dep.spawn("bench.worker", log_name="worker-routing-alone", env=env)
    try:
        with tqdm(
            desc="herald routing alone", total=None, leave=False, bar_format="{desc}: {elapsed}"
        ) as bar:
            await wait_http_ok(dep.readyz, worker, timeout=900)
            # From ready (its tables recovered) until its last in-app record was seen, as the peers count
            # theirs from their first batch to their last flush.
            process = psutil.Process(worker.pid)
            cpu = sum(process.cpu_times()[:2])
            deadline = time.monotonic() + 120
            while len(arrivals.times) < sizes.peer_events and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                bar.update(0)
            cpu = sum(process.cpu_times()[:2]) - cpu
    finally:
        dep.stop(worker)
        stop.set()
        await watcher
    return {
        "events": sizes.peer_events,
        "inapp_records_seen": len(arrivals.times),
        "events_per_second": steady_rate(arrivals.times),
        "cpu_seconds": cpu,
    }


async def delivery_ceiling(peer: PeerRun, sizes: Sizes) -> dict[str, Any]:
    """Each channel's bare provider loop in turn against one pair of sinks; the sinks' own counts are kept
    to show every send arrived."""
    sinks_out = peer.dep.tmp / "sinks-ceiling.json"
    sinks = peer.dep.spawn(
        "bench.sinks", str(sinks_out), str(peer.smtp_port), str(peer.http_port), log_name="sinks-ceiling"
    )
    try:
        await asyncio.sleep(1.0)  # the sinks' listeners
        by_channel = await peer.run(
            "bench.ceiling",
            str(sizes.ceiling_notifications),
            label="delivery ceiling",
            after=CEILING_CHANNELS,
        )
    finally:
        peer.dep.stop(sinks)
    if sinks_out.exists():
        seen = orjson.loads(sinks_out.read_bytes())
        for channel in by_channel:
            by_channel[channel]["received_by_sink"] = len(seen["rows"].get(channel, []))
    return by_channel


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """None when either side was not measured (the pipeline did not run); 0.0 when Herald managed none."""
    return numerator / denominator if numerator is not None and denominator else None


async def measure_peers(
    bootstrap: str,
    tmp: Path,
    sizes: Sizes,
    rules: Path,
    templates: Path,
    pipeline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The peers phase. `pipeline` is the pipeline phase's result of the same run, when it ran: Herald's
    routing and delivery rates, which the peers' figures are divided into."""
    load_before = os.getloadavg()
    source = Deployment(bootstrap, tmp, prefix="peer", partitions=sizes.partitions, run="backlog")
    await ensure_topics([bootstrap], [source.topic("events")], sizes.partitions, 1, compacted=set())
    with tqdm(total=sizes.peer_events, desc="peer backlog", unit="ev", leave=False) as bar:
        await asyncio.to_thread(
            produce_all,
            fast_producer(bootstrap),
            backlog(source.topic("events"), sizes.peer_events, sizes.users, "peers"),
            bar.update,
        )
    routing: dict[str, Any] = {}
    alone = PeerRun(bootstrap, tmp, sizes, rules, templates, "steps")
    routing["steps alone"] = await alone.run(
        "bench.peer_job", str(sizes.peer_events), str(sizes.users), label="steps alone"
    )
    routing["steps alone"]["events_per_second"] = _process_rate(routing["steps alone"])
    for name in ROUTING_PEERS:
        peer = PeerRun(bootstrap, tmp, sizes, rules, templates, name)
        routing[name] = await route_with(peer, name, source.topic("events"), sizes)
        routing[name]["cpu_us_per_event"] = _cpu_per_event(routing[name])
    alone_rate = await route_with_herald(bootstrap, tmp, sizes, rules, templates, source.topic("events"))
    alone_rate["cpu_us_per_event"] = _cpu_per_event(alone_rate)
    ceiling = await delivery_ceiling(PeerRun(bootstrap, tmp, sizes, rules, templates, "ceiling"), sizes)

    herald_routing = pipeline.get("routing_events_per_second") if pipeline else None
    # Per channel, delivered in the pipeline's window (email and SMS as the sinks received them).
    herald_delivery = pipeline.get("delivered_per_second", {}) if pipeline else {}
    herald_pipeline = pipeline.get("events_per_second") if pipeline else None
    # Every event of the workload needs one delivery on each channel, so the slowest channel's ceiling is the
    # provider-bound ceiling of the whole pipeline in events/s.
    slowest = min(ceiling.items(), key=lambda item: item[1]["notifications_per_second"], default=None)
    return {
        "events": sizes.peer_events,
        "users": sizes.users,
        "partitions": sizes.partitions,
        "routing": routing,
        # From the pipeline phase of this run (None when it did not run): the in-app records' steady rate,
        # the router's output while the same worker also delivers, and the end-to-end events/s.
        "herald_routing_events_per_second": herald_routing,
        "herald_pipeline_events_per_second": herald_pipeline,
        "herald_routing_to": {
            name: _ratio(herald_routing, r["events_per_second"]) for name, r in routing.items()
        },
        # Herald's routing stage alone, against each peer's rate taken the same way (the observer's window).
        "herald_routing_alone": alone_rate,
        "herald_routing_alone_to": {
            name: _ratio(alone_rate["events_per_second"], r.get("observed_events_per_second"))
            for name, r in routing.items()
            if name in ROUTING_PEERS
        },
        # The same by CPU time per event (each process's own, over its run), which the shared machine's
        # stalls move less than a rate: a peer's microseconds per event over Herald's (above 1: Herald
        # uses less).
        "herald_routing_alone_cpu_to": {
            name: _ratio(r["cpu_us_per_event"], alone_rate["cpu_us_per_event"])
            for name, r in routing.items()
            if name in ROUTING_PEERS
        },
        "delivery_ceiling": ceiling,
        "herald_delivery_per_second": {channel: herald_delivery.get(channel) for channel in ceiling},
        "herald_delivery_to_ceiling": {
            channel: _ratio(herald_delivery.get(channel), r["notifications_per_second"])
            for channel, r in ceiling.items()
        },
        # What the provider calls alone cost a process for one event (a send on each ceiling channel): the
        # part of a worker's CPU per event that is the SDKs', not Herald's.
        "sdk_cpu_us_per_event": sum(r["cpu_us_per_notification"] for r in ceiling.values())
        if ceiling
        else None,
        # The pipeline worker's CPU per notification over the plain aiokafka loop's per routed event, both of
        # this run. The machine's speed moves both alike (over five runs their correlation was 0.94 while the
        # pipeline's batches were the same: bench/RESULTS.md, seventeenth session), so this ratio compares
        # runs on a fast and a slow machine where the pipeline's events/s does not.
        "herald_notification_cpu_to_aiokafka_event_cpu": _ratio(
            pipeline.get("worker_cpu_us_per_notification") if pipeline else None,
            routing["aiokafka"]["cpu_us_per_event"],
        ),
        "ceiling_events_per_second": None if slowest is None else slowest[1]["notifications_per_second"],
        "ceiling_bound_by": None if slowest is None else slowest[0],
        "herald_pipeline_to_ceiling": None
        if slowest is None
        else _ratio(herald_pipeline, slowest[1]["notifications_per_second"]),
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
