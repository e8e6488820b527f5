"""Watching a run from outside: records arriving on topics, a process's resident memory, where the cores went,
percentiles."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition


@dataclass
class Arrivals:
    """When each counted record arrived (time.time()), and how many records were read in all."""

    times: list[float] = field(default_factory=list)
    read: int = 0


async def watch_topics(
    bootstrap: str,
    topics: list[str],
    counts: Callable[[ConsumerRecord], bool],
    arrivals: Arrivals,
    stop: asyncio.Event,
    on_count: Callable[[ConsumerRecord], None] = lambda record: None,
) -> None:
    """Read `topics` from the beginning, without a group, until `stop`; note each record `counts` accepts."""
    # A short fetch wait: the embedded broker holds a fetch for about half its wait even when data is there,
    # and the observer's own hop must not be what the latency figures measure.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        tps: list[TopicPartition] = []
        while not tps and not stop.is_set():
            await consumer.topics()
            found = {t: consumer.partitions_for_topic(t) for t in topics}
            if all(found.values()):
                tps = [TopicPartition(t, p) for t, parts in found.items() for p in parts or ()]
            else:
                await asyncio.sleep(0.2)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.time()
            for records in batch.values():
                for record in records:
                    arrivals.read += 1
                    if counts(record):
                        arrivals.times.append(now)
                        on_count(record)
    finally:
        await consumer.stop()


class RssSampler:
    """Samples a process's resident set size (bytes) every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self.last = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = int(self._process.memory_info().rss)
            except psutil.Error:
                return
            self.last = rss
            self.peak = max(self.peak, rss)
            self._stop.wait(self._interval)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    values = sorted(seconds)
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50) * 1000,
        "p95_ms": percentile(values, 95) * 1000,
        "p99_ms": percentile(values, 99) * 1000,
        "max_ms": (values[-1] * 1000) if values else float("nan"),
    }


def steady_rate(times: list[float], low: float = 0.1, high: float = 0.9) -> float:
    """Records per second between the `low` and `high` fractions of the arrivals (no start-up, no tail)."""
    if len(times) < 10:
        return float(len(times)) / max(1e-9, (max(times) - min(times))) if len(times) > 1 else 0.0
    ordered = sorted(times)
    first, last = int(len(ordered) * low), int(len(ordered) * high) - 1
    span = ordered[last] - ordered[first]
    return (last - first) / span if span > 0 else 0.0


class CoresUsed:
    """Where the machine's cores went over a window: CPU seconds of this process (`harness`), of each
    process it started, named by `roles` (pid → role) or else by what it runs (`broker` for the embedded
    broker, the module name for a `python -m`), and of the machine as a whole, with the hypervisor's steal."""

    def __init__(self, roles: dict[int, str]) -> None:
        self._roles = roles
        self._start = time.monotonic()
        self._before = self._by_role()
        self._machine = psutil.cpu_times()

    def _role(self, process: psutil.Process) -> str:
        if process.pid in self._roles:
            return self._roles[process.pid]
        argv = process.cmdline()
        if argv and "tansu" in argv[0]:
            return "broker"
        return argv[argv.index("-m") + 1] if "-m" in argv[:-1] else "other"

    def _by_role(self) -> dict[tuple[int, str], float]:
        me = psutil.Process()
        seen: dict[tuple[int, str], float] = {(me.pid, "harness"): sum(me.cpu_times()[:2])}
        for child in me.children(recursive=True):
            try:
                seen[(child.pid, self._role(child))] = sum(child.cpu_times()[:2])
            except psutil.Error:  # gone since the listing
                continue
        return seen

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds per role since the start (a process gone by now counts nothing)."""
        used: dict[str, float] = {}
        for (pid, role), cpu in self._by_role().items():
            used[role] = used.get(role, 0.0) + cpu - self._before.get((pid, role), 0.0)
        return used

    def cores(self) -> dict[str, float]:
        """Cores used per role since the start (`cpu_seconds` over the time since), `machine` (every
        process; all cores busy reads as their count) and `steal` (time the hypervisor gave to others)."""
        seconds = max(1e-9, time.monotonic() - self._start)
        used = {role: cpu / seconds for role, cpu in self.cpu_seconds().items()}
        after, before = psutil.cpu_times(), self._machine
        idle = (after.idle + getattr(after, "iowait", 0.0)) - (before.idle + getattr(before, "iowait", 0.0))
        total = sum(after) - sum(before) - (getattr(after, "guest", 0.0) - getattr(before, "guest", 0.0))
        cpus = psutil.cpu_count() or 1
        used["machine"] = max(0.0, (total - idle) / max(1e-9, total)) * cpus
        used["steal"] = (getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0)) / seconds
        return {role: round(value, 3) for role, value in sorted(used.items())}


class MainThreadTime:
    """Of each second of a window, how long a process's main thread ran and how long it was ready to run but
    waited for a core (Linux's /proc/<pid>/task/<pid>/schedstat). Their sum near 1 is a thread that always
    had work, bound by its CPU; the wait is what a core of its own would have given it. None where the
    kernel does not keep them."""

    def __init__(self, pid: int) -> None:
        self._path = Path(f"/proc/{pid}/task/{pid}/schedstat")
        self._start = time.monotonic()
        self._before = self._read()

    def _read(self) -> tuple[float, float] | None:
        try:
            ran, waited, _slices = self._path.read_text().split()
        except (OSError, ValueError):
            return None
        return int(ran) / 1e9, int(waited) / 1e9

    def shares(self) -> dict[str, float] | None:
        after, before = self._read(), self._before
        if after is None or before is None:
            return None
        seconds = max(1e-9, time.monotonic() - self._start)
        return {
            "ran": round((after[0] - before[0]) / seconds, 3),
            "waited_for_a_core": round((after[1] - before[1]) / seconds, 3),
        }
