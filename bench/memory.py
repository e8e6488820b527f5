"""Measurement (4): the worker's peak resident memory with N users in its tables, on Faust's memory store and
on its RocksDB store (rocksdict): from start through table recovery to routing a batch of events."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from adapters.broker.topics import ensure_topics
from bench.deployment import Deployment
from bench.observe import Arrivals, watch_topics
from bench.pipeline import HeraldUnderTest, load_tables
from bench.sizes import Sizes
from bench.workload import backlog, fast_producer, produce_all

STORES = {"memory": None, "rocksdb": "rocksdb://"}


async def measure_memory(
    bootstrap: str, tmp: Path, sizes: Sizes, rules: Path, templates: Path
) -> list[dict[str, Any]]:
    results = []
    for users in sizes.memory_users:
        dep = Deployment(bootstrap, tmp, prefix=f"mem{users}", partitions=sizes.partitions)
        load_seconds = await load_tables(dep, users, f"{users:,} users")
        for store, url in STORES.items():
            dep.run = store
            results.append(await _one(dep, users, store, url, sizes, rules, templates, load_seconds))
    return results


async def _one(
    dep: Deployment,
    users: int,
    store: str,
    url: str | None,
    sizes: Sizes,
    rules: Path,
    templates: Path,
    load_seconds: float,
) -> dict[str, Any]:
    inapp = dep.topic("deliver.inapp")
    await ensure_topics([dep.bootstrap], [dep.topic("events"), inapp], dep.partitions, 1, compacted=set())
    herald = HeraldUnderTest(dep, rules, templates, store=url)
    arrivals = Arrivals()
    stop = asyncio.Event()
    result: dict[str, Any] = {"users": users, "store": store, "table_load_seconds": load_seconds, "ok": False}
    try:
        with tqdm(
            desc=f"memory {users:,} users, {store}: recovering",
            total=None,
            leave=False,
            bar_format="{desc} {elapsed}",
        ) as bar:
            starting = asyncio.create_task(herald.start())
            while not starting.done():
                await asyncio.wait([starting], timeout=0.5)
                bar.update(0)
            starting.result()
        result["ready_seconds"] = herald.ready_seconds
        result["rss_after_recovery_bytes"] = herald.rss.last if herald.rss else 0
        watcher = asyncio.create_task(watch_topics(dep.bootstrap, [inapp], lambda r: True, arrivals, stop))
        await asyncio.to_thread(
            produce_all,
            fast_producer(dep.bootstrap),
            backlog(dep.topic("events"), sizes.memory_events, users, store),
        )
        deadline = time.monotonic() + 60
        while len(arrivals.times) < sizes.memory_events and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.25)
        stop.set()
        await watcher
        result["events_routed"] = len(arrivals.times)
        result["ok"] = True
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc)[-1500:]}"
    finally:
        herald.stop()
        result["peak_rss_bytes"] = herald.rss.peak if herald.rss else 0
    return result
