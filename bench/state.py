"""Measurement (6), the worker's state (issue 16): cold table recovery on each store, a clean restart on
RocksDB, peak RSS with N users, and what one delivery costs against the recipient's history (in-process).

One app id, so one pair of changelogs written once, is read by three workers in turn: memory store cold,
RocksDB cold (HERALD_STORE=rocksdb, under its own HERALD_DATA_DIR), then RocksDB again on that directory after
a SIGTERM, which leaves the clean-stop mark (streams.runtime.stores) so only the changelogs' tail is read.
Workers run one at a time: recovery is one core per worker, and the rates are the point. N is the size's
`state_users`, or BENCH_STATE_USERS. BENCH_STATE_MEMRAY=<dir> runs each cold worker
under memray (native frames, aggregated: `memray flamegraph` / `memray summary` on the capture).
BENCH_STATE_PROFILE=<dir> py-spies each cold worker (idle samples
included) for BENCH_STATE_PROFILE_SECONDS (default 20) from its first `recovering` answer, into
<dir>/state-<run>.txt (py-spy's raw, collapsed stacks)."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from faust.serializers import codecs

from adapters.broker.embedded import free_port
from bench.deployment import Deployment
from bench.observe import RssSampler
from bench.pipeline import load_tables, provider_env, table_keys
from bench.sizes import Sizes
from schemas.channels import Channel
from schemas.notifications import EmailNotification
from streams.delivery.answers import Answer
from streams.delivery.dedup import delivered_at, entry_key
from streams.delivery.failover import Attempt, Sent
from streams.delivery.retry_policy import RetryPolicy
from streams.delivery.steps import ChannelSpec, conclude
from streams.runtime.stores import CLEAN_STOP_MARK

RECOVERED_TABLES = ("users", "preferences")
HISTORY = 1_000  # earlier deliveries of the recipient with a history (the old design's cap)
OTHER_ENTRIES = 100_000  # other recipients' entries in the delivered table
ITERATIONS = 20_000


# --- the worker's recovery and restart ---------------------------------------------------------------------


@dataclass
class Readiness:
    """/readyz as polled from outside: when it first said `recovering`, the records it had read and had left
    then and last, and when it answered 200."""

    ready_seconds: float = float("nan")
    first_recovering: tuple[float, int, int] | None = None  # (seconds since start, read, left)
    last_recovering: tuple[float, int, int] | None = None
    records_seen: int = 0  # the most records (read and left) a `recovering` answer counted
    samples: int = 0
    # When /readyz first gave each reason (starting, rebalancing, recovering, ...): where start-up time goes.
    reasons: dict[str, float] = field(default_factory=dict)

    def note(self, seconds: float, body: dict[str, Any]) -> None:
        self.samples += 1
        self.reasons.setdefault(str(body.get("reason")), round(seconds, 2))
        progress = body.get("recovery")
        if body.get("reason") != "recovering" or not isinstance(progress, dict):
            return
        sample = (seconds, int(progress.get("records_read", 0)), int(progress.get("records_left", 0)))
        self.records_seen = max(self.records_seen, sample[1] + sample[2])
        if self.first_recovering is None:
            self.first_recovering = sample
        self.last_recovering = sample

    def summary(self) -> dict[str, Any]:
        summary = recovery_summary(self.ready_seconds, self.first_recovering, self.last_recovering)
        return {**summary, "records_seen": self.records_seen, "first_seen_seconds": self.reasons}


def recovery_summary(
    ready_seconds: float,
    first: tuple[float, int, int] | None,
    last: tuple[float, int, int] | None,
) -> dict[str, Any]:
    """Figures from /readyz samples. `recovering_seconds`: from the first `recovering` answer to ready (the
    group join and start-up before it are left out); `records_per_second`: the records /readyz saw read
    between its first and last `recovering` answers, over the time between them (None with fewer than two)."""
    out: dict[str, Any] = {
        "ready_seconds": ready_seconds,
        "recovering_seconds": None,
        "records_per_second": None,
    }
    if first is None or last is None:
        return out
    out["recovering_seconds"] = ready_seconds - first[0]
    span = last[0] - first[0]
    if span > 0 and last[1] > first[1]:
        out["records_per_second"] = (last[1] - first[1]) / span
    return out


@dataclass
class StateWorker:
    """One worker process (no provider sinks: nothing is delivered), its RSS and its /readyz from outside."""

    dep: Deployment
    env: dict[str, str]
    log_name: str
    process: subprocess.Popen[bytes] | None = None
    rss: RssSampler | None = None
    readiness: Readiness = field(default_factory=Readiness)
    profile_to: Path | None = None  # py-spy's output once the worker first says `recovering`
    profiler: subprocess.Popen[bytes] | None = None

    memray_to: Path | None = None  # memray's native heap capture of the whole run (high-water mark)

    async def start(self, timeout: float = 1800.0) -> None:  # noqa: ASYNC109 - a deadline, not a cancel scope
        if self.memray_to is not None:
            # Native frames (RocksDB, rocksdict) too; aggregated, so a million records' capture stays small.
            out = str(self.memray_to)
            memray = ("run", "--native", "--aggregate", "--force", "-o", out, "-m", "bench.worker")
            self.process = self.dep.spawn("memray", *memray, log_name=self.log_name, env=self.env)
        else:
            self.process = self.dep.spawn("bench.worker", log_name=self.log_name, env=self.env)
        self.rss = RssSampler(self.process.pid).start()
        started = time.monotonic()
        async with httpx.AsyncClient() as client:
            while time.monotonic() - started < timeout:
                if self.process.poll() is not None:
                    tail = self.dep.log(self.log_name)[-3000:]
                    raise RuntimeError(f"worker exited with {self.process.returncode}:\n{tail}")
                try:
                    answer = await client.get(self.dep.readyz, timeout=2.0)
                    seconds = time.monotonic() - started
                    if answer.status_code == 200:
                        self.readiness.ready_seconds = seconds
                        return
                    self.readiness.note(seconds, answer.json())
                    if (
                        self.profile_to is not None
                        and self.profiler is None
                        and self.readiness.first_recovering
                    ):
                        self.profiler = _profile(self.process.pid, self.profile_to)
                except (httpx.HTTPError, ValueError):
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.dep.readyz} not ready after {timeout} s")

    def stop(self) -> float:
        """SIGTERM (a kill after 60 s); returns the seconds the worker took to exit."""
        began = time.monotonic()
        if self.process is not None:
            self.dep.stop(self.process, timeout=60.0)
        if self.rss is not None:
            self.rss.stop()
        if self.profiler is not None:
            self.profiler.wait(timeout=60)
        return time.monotonic() - began

    @property
    def peak_rss(self) -> int:
        return self.rss.peak if self.rss else 0


def _profile(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy on the worker, idle samples included (a recovery's hand-offs wait more than they compute)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(py_spy):
        return None
    seconds = os.environ.get("BENCH_STATE_PROFILE_SECONDS", "20")
    command = [
        py_spy,
        "record",
        "-p",
        str(pid),
        "-d",
        seconds,
        "-r",
        "100",
        "--idle",
        "-f",
        "raw",
        "-o",
        str(out),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # noqa: S603


async def _run_worker(
    dep: Deployment, rules: Path, templates: Path, users: int, label: str, *, stop_timed: bool = False
) -> dict[str, Any]:
    env = {**dep.env, **provider_env(dep, rules, templates, free_port(), free_port())}
    worker = StateWorker(dep, env, log_name=f"state-{label}")
    profiles = os.environ.get("BENCH_STATE_PROFILE")
    if profiles and label.startswith("cold"):
        Path(profiles).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the worker
        worker.profile_to = Path(profiles) / f"state-{label}.txt"
    memray = os.environ.get("BENCH_STATE_MEMRAY")
    if memray and label.startswith("cold"):
        Path(memray).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the worker
        worker.memray_to = Path(memray) / f"state-{label}.bin"
    result: dict[str, Any] = {"store": env["HERALD_STORE"], "users": users, "ok": False}
    try:
        await worker.start()
        result.update(worker.readiness.summary())
        result["rss_at_ready_bytes"] = worker.rss.last if worker.rss else 0
        # Before the /metrics scrape below: counting a RocksDB table's keys reads the whole table.
        result["peak_rss_to_ready_bytes"] = worker.peak_rss
        keys = await table_keys(dep)
        result["table_keys"] = {t: keys.get(t, 0) for t in RECOVERED_TABLES}
        short = {t: n for t, n in result["table_keys"].items() if n < users}
        if short:
            raise RuntimeError(f"tables recovered short of {users:,} users: {short}")
        await asyncio.sleep(2.0)  # a moment idle after ready: RSS settles, RocksDB flushes
        result["ok"] = True
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc)[-1500:]}"
    finally:
        stop_seconds = worker.stop()
        result["peak_rss_bytes"] = worker.peak_rss
        if stop_timed:
            result["stop_seconds"] = stop_seconds
    return result


def _store_env(store: str) -> dict[str, str]:
    # The app's own store setting, so a RocksDB worker keeps its data and the clean-stop mark as
    # `herald worker` does (BENCH_STORE, which the memory phase uses, only swaps Faust's store URL).
    return {"HERALD_STORE": store}


async def measure_state(
    bootstrap: str, tmp: Path, sizes: Sizes, rules: Path, templates: Path
) -> dict[str, Any]:
    users = int(os.environ.get("BENCH_STATE_USERS", sizes.state_users))
    result: dict[str, Any] = {"users": users, "changelog_records": users * len(RECOVERED_TABLES)}
    # Before any worker: the in-process figure wants the cores to itself.
    result["delivery_cost"] = await asyncio.to_thread(measure_delivery_cost, ITERATIONS)
    memory = Deployment(
        bootstrap,
        tmp,
        prefix="state",
        partitions=sizes.partitions,
        run="memory",
        extra_env=_store_env("memory"),
    )
    rocksdb = Deployment(
        bootstrap,
        tmp,
        prefix="state",
        partitions=sizes.partitions,
        run="rocksdb",
        extra_env=_store_env("rocksdb"),
    )
    assert memory.app_id == rocksdb.app_id  # one pair of changelogs for both
    result["table_load_seconds"] = await load_tables([memory], users, f"state, {users:,} users")
    result["cold_memory"] = await _run_worker(memory, rules, templates, users, "cold-memory")
    result["cold_rocksdb"] = await _run_worker(
        rocksdb, rules, templates, users, "cold-rocksdb", stop_timed=True
    )
    tables = Path(rocksdb.env["HERALD_DATA_DIR"]) / rocksdb.app_id
    result["clean_stop_mark"] = (tables / CLEAN_STOP_MARK).exists()
    result["rocksdb_disk_bytes"] = sum(f.stat().st_size for f in tables.rglob("*") if f.is_file())
    result["restart_rocksdb"] = await _run_worker(rocksdb, rules, templates, users, "restart-rocksdb")
    return result


# --- one delivery's cost against the recipient's history (in-process) --------------------------------------

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
RETENTION = 7 * 24 * 3600.0
SPEC: ChannelSpec[EmailNotification] = ChannelSpec(
    channel=Channel.EMAIL,
    model=EmailNotification,
    policy=RetryPolicy(),
    retry_topics=("bench.email.retry.1", "bench.email.retry.2", "bench.email.retry.3"),
    users_topic="bench.users",
    dedup_retention_seconds=RETENTION,
)
ANSWER = Answer((Attempt("smtp", 0.01, "msg-1"),), Sent("smtp", "msg-1"))


def _notifications(recipient: str, count: int) -> list[EmailNotification]:
    occurred = NOW - timedelta(seconds=1)
    return [
        EmailNotification(
            notification_id=f"ntf-new-{i}",
            event_id=f"evt-{i}",
            event_type="order.shipped",
            recipient=recipient,
            occurred_at=occurred,
            created_at=occurred,
            to=f"{recipient}@bench.example.com",
            subject="Your order shipped",
            text="It is on its way.",
        )
        for i in range(count)
    ]


def delivered_table(history: int, others: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The delivered-ids table as this version keeps it (one entry per notification: `history` for
    `with-history`, `others` spread over other recipients) and as the old design kept it (one map per
    recipient, the same deliveries)."""
    now = NOW.timestamp()
    new: dict[str, Any] = {}
    old: dict[str, Any] = {}
    spread = max(1, others // 10)
    for i in range(others):
        recipient, nid = f"other-{i % spread}", f"ntf-{i}"
        new[entry_key(recipient, nid)] = now - 60 - i % 3600
        old.setdefault(recipient, {})[nid] = now - 60 - i % 3600
    history_map = {f"ntf-old-{i}": now - 60 - i for i in range(history)}
    for nid, when in history_map.items():
        new[entry_key("with-history", nid)] = when
    if history:
        old["with-history"] = history_map
    return new, old


def _new_design(table: dict[str, Any], notifications: list[EmailNotification]) -> float:
    """Seconds for this version's delivery: dedup lookup, the step's decision and effects, and the table
    write as the outbox encodes it (the tables' json codec, key and value)."""
    get = table.get
    now = NOW
    started = time.perf_counter()
    for notification in notifications:
        if delivered_at(get, notification.recipient, notification.notification_id) is not None:
            raise AssertionError("a new notification was taken for a duplicate")
        decision = conclude(SPEC, notification, ANSWER, profile=None, now=now)
        for write in decision.effects.writes:
            codecs.dumps("json", write.key)
            codecs.dumps("json", write.value)
    return time.perf_counter() - started


def _old_remember(
    record: dict[str, float] | None, notification_id: str, now: float, retention: float, cap: int
) -> dict[str, float]:
    # The old design (streams/delivery/dedup.py at 57e1105, `remember`): the recipient's whole map, pruned
    # and capped, rebuilt on every delivery.
    kept = {nid: when for nid, when in (record or {}).items() if now - when < retention}
    kept[notification_id] = now
    if len(kept) > cap:
        kept = dict(sorted(kept.items(), key=lambda item: item[1], reverse=True)[:cap])
    return kept


def _old_design(table: dict[str, Any], notifications: list[EmailNotification]) -> float:
    """Seconds for the old design's delivery (57e1105): the recipient's map read and checked, the same step
    (its statuses; its constant-size entry write is not encoded), the map rebuilt with the new id, and the
    whole map encoded as the table write."""
    now = NOW
    ts = now.timestamp()
    started = time.perf_counter()
    for notification in notifications:
        record = table.get(notification.recipient)
        when = record.get(notification.notification_id) if record else None
        if when is not None and ts - when < RETENTION:
            raise AssertionError("a new notification was taken for a duplicate")
        conclude(SPEC, notification, ANSWER, profile=None, now=now)
        rebuilt = _old_remember(record, notification.notification_id, ts, RETENTION, HISTORY)
        codecs.dumps("json", notification.recipient)
        codecs.dumps("json", rebuilt)
    return time.perf_counter() - started


def measure_delivery_cost(iterations: int = ITERATIONS, runs: int = 5) -> dict[str, Any]:
    """µs per delivery in each case, the best of `runs` passes taken in turn (so that warm-up and anything
    else on the machine fall on no case in particular)."""
    new_table, old_table = delivered_table(HISTORY, OTHER_ENTRIES)
    fresh = _notifications("new-recipient", iterations)
    known = _notifications("with-history", iterations)
    # The old design at 1,000 earlier deliveries costs ~20x the others: a tenth of the iterations suffices.
    slow = known[: max(1, iterations // 10)]
    cases: dict[str, tuple[Callable[[dict[str, Any], list[EmailNotification]], float], Any, Any]] = {
        "new_us_0": (_new_design, new_table, fresh),
        "new_us_history": (_new_design, new_table, known),
        "old_us_0": (_old_design, old_table, fresh),
        "old_us_history": (_old_design, old_table, slow),
    }
    gc.collect()
    figures = dict.fromkeys(cases, float("inf"))
    for _ in range(runs):
        for name, (timed, table, batch) in cases.items():
            figures[name] = min(figures[name], timed(table, batch) / len(batch) * 1e6)
    return {
        "history": HISTORY,
        "other_entries": OTHER_ENTRIES,
        "iterations": iterations,
        "iterations_old_history": len(slow),
        "runs": runs,
        **figures,
        "new_ratio": figures["new_us_history"] / figures["new_us_0"],
        "old_ratio": figures["old_us_history"] / figures["old_us_0"],
        "old_encoded_bytes_history": len(codecs.dumps("json", old_table["with-history"])),
        "new_encoded_bytes": len(codecs.dumps("json", NOW.timestamp())),
    }
