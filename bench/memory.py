"""Measurement (4): the worker's peak resident memory with N users in its tables, on Faust's memory store and
on its RocksDB store (rocksdict): from start through table recovery to routing a batch of events.

The two stores are measured at the same time, by two workers with their own app ids and changelogs: table
recovery is single-threaded Python (one core per worker), so on two cores the pair takes little longer than
one. Peak RSS is each process's own and barely changes; `ready_seconds` (recovery time) does, and is marked
`concurrent` in the result."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from adapters.broker.topics import ensure_topics
from bench.deployment import Deployment
from bench.observe import Arrivals, watch_topics
from bench.pipeline import HeraldUnderTest, load_tables, table_keys
from bench.sizes import Sizes
from bench.workload import backlog, fast_producer, produce_all

STORES = {"memory": None, "rocksdb": "rocksdb://"}
RECOVERED_TABLES = ("users", "preferences")


async def measure_memory(
    bootstrap: str, tmp: Path, sizes: Sizes, rules: Path, templates: Path
) -> list[dict[str, Any]]:
    sized = {
        users: {
            store: Deployment(
                bootstrap, tmp, prefix=f"mem{users}-{store}", partitions=sizes.partitions, run=store
            )
            for store in STORES
        }
        for users in sizes.memory_users
    }

    def load(users: int) -> asyncio.Task[float]:
        deps = list(sized[users].values())
        return asyncio.create_task(load_tables(deps, users, f"{users:,} users, {len(deps)} stores"))

    # The next size's changelogs are written while this size's workers recover (the harness and the
    # broker do that work, mostly while the workers wait on their consumer-group join).
    loading = load(sizes.memory_users[0])
    results = []
    for index, (users, deps) in enumerate(sized.items()):
        load_seconds = await loading
        if index + 1 < len(sizes.memory_users):
            loading = load(sizes.memory_users[index + 1])
        results.extend(
            await asyncio.gather(
                *(
                    _one(dep, users, store, STORES[store], sizes, rules, templates, load_seconds, slot)
                    for slot, (store, dep) in enumerate(deps.items())
                )
            )
        )
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
    slot: int,
) -> dict[str, Any]:
    inapp = dep.topic("deliver.inapp")
    await ensure_topics([dep.bootstrap], [dep.topic("events"), inapp], dep.partitions, 1, compacted=set())
    herald = HeraldUnderTest(dep, rules, templates, store=url)
    arrivals = Arrivals()
    stop = asyncio.Event()
    result: dict[str, Any] = {
        "users": users,
        "store": store,
        "table_load_seconds": load_seconds,
        "concurrent": True,
        "ok": False,
    }
    try:
        with tqdm(
            desc=f"memory {users:,} users, {store}: recovering",
            total=None,
            leave=False,
            position=slot,
            bar_format="{desc} {elapsed}",
        ) as bar:
            starting = asyncio.create_task(herald.start())
            while not starting.done():
                await asyncio.wait([starting], timeout=0.5)
                bar.update(0)
            starting.result()
        result["ready_seconds"] = herald.ready_seconds
        result["rss_after_recovery_bytes"] = herald.rss.last if herald.rss else 0
        keys = await table_keys(dep)
        result["table_keys"] = keys
        short = {t: keys.get(t, 0) for t in RECOVERED_TABLES if keys.get(t, 0) < users}
        if short:
            raise RuntimeError(f"tables recovered short of {users:,} users: {short}")
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
