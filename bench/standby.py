"""Measurement (7), a standby takeover (issue 16): two RocksDB workers hold each other's tables as standbys
(Faust's default of one standby replica); one is killed with SIGKILL while probe events flow, and the figure
is how long until the survivor routes again on every partition the dead worker owned.

N users (BENCH_STATE_USERS, or the size's `state_users`, as bench.state) are written to the table changelogs
of an app id of this phase's own. Both workers start at once, each on its own data dir and ops port; the
phase waits until both are ready and until each one's standbys have read their changelogs to the end (the
workers' probe lines, bench.probe: Faust's own offsets, against the changelogs' ends). Probe events then go
to one user per partition at BENCH_STANDBY_RATE events/s (default 20), routed to in-app only, and the in-app
topic is watched. Worker A is killed; the survivor's /readyz is polled from the kill on, as bench.state polls
a starting worker. BENCH_HERALD_SESSION_TIMEOUT_SECONDS=... tries another session timeout (bench.deployment);
the one in force is reported, since the broker notices the dead member only after it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from tqdm import tqdm

from adapters.broker.embedded import free_port
from adapters.broker.offsets import end_offsets
from adapters.broker.topics import ensure_topics
from bench.deployment import Deployment
from bench.observe import Arrivals, RssSampler, watch_topics
from bench.pipeline import by_table, load_tables, provider_env, table_keys
from bench.sizes import Sizes
from bench.state import RECOVERED_TABLES, Readiness, StateWorker
from bench.takeover import Changelog, Holdings, ProbeLog, last_holdings, records_left
from bench.workload import EVENT_TYPE, event, fast_producer, home_partition, parse_stamp, user_id
from kernel.settings import Settings
from streams.ops.recovery import RECORDS_READ

# The probe events go to in-app only: the workers have no provider sinks (as in bench.state), and email or
# SMS attempts against closed ports would retry through the takeover and blur it.
INAPP_RULES = f"""rules:
  - match: {EVENT_TYPE}
    category: bench
    channels:
      inapp: {{template: bench}}
"""
RUN = "takeover"
WARM_SECONDS = 10.0  # probes routed on every partition before the kill
AFTER_RESUMED_SECONDS = 5.0  # watched on after routing resumed everywhere and the survivor is ready
TAKEOVER_TIMEOUT_SECONDS = 240.0
DRAIN_SECONDS = 60.0
STANDBY_TIMEOUT_SECONDS = 3600.0
# Faust's recovery log lines that mark the survivor's takeover (read from its log, at -l info).
MILESTONES = (
    "Heartbeat failed",  # the survivor learns of the rebalance the broker began when the session expired
    "Executing _on_partitions_assigned",  # joined and synced: the new assignment is in
    "generation id",
    "Highwater for active changelog partitions",
    "active offsets at start of reading",
    "Restoring state from changelog topics",
    "bulk table recovery",
    "Recovery complete",
    "Restore complete",
    "Seek stream partitions",
    "Worker ready",
)


@dataclass
class Prober:
    """Produces probe events at `rate` per second, round-robin over one user per partition, until stopped."""

    dep: Deployment
    recipients: list[str]  # recipients[p] lives on partition p
    rate: float
    log: ProbeLog = field(default_factory=ProbeLog)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        producer = fast_producer(self.dep.bootstrap)
        topic, began, seq = self.dep.topic("events"), time.monotonic(), 0
        while not self.stop.is_set():
            due = int((time.monotonic() - began) * self.rate) + 1
            while seq < due:
                partition = seq % len(self.recipients)
                recipient, now = self.recipients[partition], time.time()
                producer.produce(
                    topic, event(seq, recipient, now, RUN), recipient.encode(), partition=partition
                )
                self.log.note_produced(seq, partition, now)
                seq += 1
            producer.poll(0)
            await asyncio.sleep(0.01)
        await asyncio.to_thread(producer.flush, 30)

    def on_routed(self, record: Any) -> None:
        stamp = parse_stamp(orjson.loads(record.value).get("body", ""))
        if stamp is not None:
            self.log.note_seen(stamp[0], time.time())


def one_user_per_partition(users: int, partitions: int) -> list[str]:
    """The first user whose home is each partition (where the router meets their state)."""
    found: dict[int, str] = {}
    for index in range(users):
        found.setdefault(home_partition(user_id(index), partitions), user_id(index))
        if len(found) == partitions:
            return [found[p] for p in range(partitions)]
    raise ValueError(f"{users} users do not cover {partitions} partitions")


def holdings(worker: StateWorker, probe: Path) -> Holdings | None:
    if worker.process is None:
        return None
    path = Path(f"{probe}.{worker.process.pid}")
    return last_holdings(path.read_text()) if path.exists() else None


async def changelog_ends(bootstrap: str, changelogs: set[Changelog]) -> dict[Changelog, int]:
    """Each changelog partition's next offset, checked against a fetch (Tansu's short end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await end_offsets(consumer, bootstrap, [TopicPartition(t, p) for t, p in changelogs])
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): end for tp, end in ends.items()}


async def wait_standbys(
    workers: dict[str, StateWorker], probes: dict[str, Path], dep: Deployment
) -> tuple[float, dict[str, Holdings]]:
    """Seconds until each worker holds every partition of the N-user tables (active or standby) and its
    standbys have read every changelog they follow to its end; the workers' last holdings."""
    started = time.monotonic()
    wanted = {dep.changelog(t): set(range(dep.partitions)) for t in RECOVERED_TABLES}
    with tqdm(desc="standbys catching up", unit="rec", leave=False) as bar:
        while time.monotonic() - started < STANDBY_TIMEOUT_SECONDS:
            for name, worker in workers.items():
                if worker.process is not None and worker.process.poll() is not None:
                    raise RuntimeError(f"worker {name} exited:\n{worker.dep.log(worker.log_name)[-3000:]}")
            held = {name: holdings(w, probes[name]) for name, w in workers.items()}
            if all(h is not None for h in held.values()):
                found = {name: h for name, h in held.items() if h is not None}
                standby = {tp for h in found.values() for tp in h.standby}
                ends = await changelog_ends(dep.bootstrap, standby)
                left = sum(h.standby_left(ends) for h in found.values())
                covered = all(h.partitions(t) >= p for h in found.values() for t, p in wanted.items())
                bar.set_postfix(left=left, covered=covered)
                if covered and left == 0:
                    return time.monotonic() - started, found
            await asyncio.sleep(2.0)
    raise TimeoutError(f"standbys not caught up after {STANDBY_TIMEOUT_SECONDS} s")


@dataclass
class Survivor:
    """The survivor's /readyz from the kill on (seconds after it): when it went not-ready, when it was ready
    again, and the reasons and recovery progress it gave in between (bench.state's Readiness)."""

    dep: Deployment
    killed_at: float
    readiness: Readiness = field(default_factory=Readiness)
    not_ready_at: float | None = None
    ready_again_at: float | None = None

    async def poll(self, client: httpx.AsyncClient) -> None:
        try:
            answer = await client.get(self.dep.readyz, timeout=1.0)
            body = answer.json()
        except (httpx.HTTPError, ValueError):
            return
        now = time.time() - self.killed_at
        if answer.status_code != 200:
            self.readiness.note(now, body)
            if self.not_ready_at is None:
                self.not_ready_at = now
        elif self.not_ready_at is not None and self.ready_again_at is None:
            self.ready_again_at = self.readiness.ready_seconds = now


async def watch_takeover(survivor: Survivor, prober: Prober, moved: list[int]) -> None:
    """Polls the survivor until it is ready again and every moved partition routed a new probe, then a few
    seconds more (late duplicates, the survivor's own partitions); or until the timeout."""
    done_at: float | None = None
    async with httpx.AsyncClient() as client:
        with tqdm(desc="takeover", leave=False, bar_format="{desc} {elapsed} {postfix}") as bar:
            while time.time() - survivor.killed_at < TAKEOVER_TIMEOUT_SECONDS:
                await survivor.poll(client)
                resumed = prober.log.resumed(survivor.killed_at, moved)
                waiting = [p for p, s in resumed.items() if s is None]
                shown = f"ready={survivor.ready_again_at is not None} waiting={waiting}"
                if bar.postfix != shown:
                    bar.set_postfix_str(shown)
                if done_at is None and not waiting and survivor.ready_again_at is not None:
                    done_at = time.time()
                if done_at is not None and time.time() - done_at > AFTER_RESUMED_SECONDS:
                    return
                await asyncio.sleep(0.1)


def milestones(log: str, since: float) -> list[tuple[float, str]]:
    """(seconds after `since`, first line) of the Faust recovery lines in MILESTONES logged after it."""
    out = []
    for line in log.splitlines():
        if not line.startswith("{") or not any(m in line for m in MILESTONES):
            continue
        try:
            record = orjson.loads(line)
            at = datetime.fromisoformat(str(record["ts"])).timestamp()
        except (orjson.JSONDecodeError, KeyError, ValueError):
            continue
        if at >= since:
            out.append((round(at - since, 2), str(record.get("message", "")).splitlines()[0][:120]))
    return out


def membership(env: dict[str, str]) -> dict[str, float]:
    """The group timeouts the workers run with: their HERALD_ settings, else Herald's defaults."""
    fields = Settings.model_fields
    names = ("session_timeout_seconds", "rebalance_timeout_seconds", "heartbeat_interval_seconds")
    return {n: float(env.get(f"HERALD_{n.upper()}", fields[n].default)) for n in names}


def worker_pair(
    bootstrap: str, tmp: Path, sizes: Sizes, templates: Path
) -> tuple[dict[str, StateWorker], dict[str, Path]]:
    """Workers "a" and "b" of one deployment (one app id, one set of topics), each on its own ops port and
    RocksDB data dir, with their probe lines' paths (bench.probe adds the pid)."""
    rules = tmp / "standby-routing" / "rules.yaml"
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text(INAPP_RULES)
    deps = {
        name: Deployment(
            bootstrap,
            tmp,
            prefix="standby",
            partitions=sizes.partitions,
            run=RUN,
            extra_env={"HERALD_STORE": "rocksdb", "HERALD_DATA_DIR": str(tmp / f"data-standby-{name}")},
        )
        for name in ("a", "b")
    }
    deps["b"].internal_secret = deps["a"].internal_secret  # one deployment: workers forward to each other
    workers, probes = {}, {}
    for name, dep in deps.items():
        probes[name] = tmp / f"standby-probe-{name}"
        env = {
            **dep.env,
            **provider_env(dep, rules, templates, free_port(), free_port()),
            "BENCH_PROBE": str(probes[name]),
            "BENCH_WORKER_LOG": "info",  # Faust's recovery lines (and no spinner: bench/worker.py)
        }
        workers[name] = StateWorker(dep, env, log_name=f"standby-{name}")
    return workers, probes


async def standby_tail(bootstrap: str, held: Holdings | None) -> dict[str, Any] | None:
    """What the survivor must read of the moved partitions: its standbys' offsets (its last probe line, up to
    two seconds old: an upper bound) against the changelogs' ends, which nobody writes after the kill."""
    if held is None:
        return None
    ends = await changelog_ends(bootstrap, set(held.standby))
    left = {f"{t}:{p}": records_left(o, ends[(t, p)]) for (t, p), o in held.standby.items()}
    return {"records": sum(left.values()), "by_changelog": {k: n for k, n in left.items() if n}}


async def measure_standby(
    bootstrap: str, tmp: Path, sizes: Sizes, rules: Path, templates: Path
) -> dict[str, Any]:
    """The phase (see the module). `rules` is the bench's three-channel rules file, left unused: the workers
    route the probes with INAPP_RULES and the same templates."""
    users = int(os.environ.get("BENCH_STATE_USERS", sizes.state_users))
    rate = float(os.environ.get("BENCH_STANDBY_RATE", "20"))
    workers, probes = worker_pair(bootstrap, tmp, sizes, templates)
    dep_a, dep_b = workers["a"].dep, workers["b"].dep
    result: dict[str, Any] = {
        "users": users,
        "partitions": sizes.partitions,
        "probe_events_per_second": rate,
        "membership": membership(workers["a"].env),
        "ok": False,
    }
    await ensure_topics(
        [bootstrap],
        [dep_a.topic("events"), dep_a.topic("deliver.inapp")],
        sizes.partitions,
        1,
        compacted=set(),
    )
    result["table_load_seconds"] = await load_tables([dep_a], users, f"standby, {users:,} users")
    prober = Prober(dep_a, one_user_per_partition(users, sizes.partitions), rate)
    stop_watching = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    producing: asyncio.Task[None] | None = None
    try:
        await asyncio.gather(*(w.start() for w in workers.values()))
        result["start"] = {name: w.readiness.summary() for name, w in workers.items()}
        caught_up, held = await wait_standbys(workers, probes, dep_a)
        result["standbys_caught_up_seconds_after_ready"] = caught_up
        result["standby_replicas"] = held["a"].standby_replicas
        result["table_keys_before_kill"] = {n: await table_keys(w.dep) for n, w in workers.items()}

        arrivals = Arrivals()
        watcher = asyncio.create_task(
            watch_topics(
                bootstrap,
                [dep_a.topic("deliver.inapp")],
                lambda r: True,
                arrivals,
                stop_watching,
                prober.on_routed,
            )
        )
        producing = asyncio.create_task(prober.run())
        await asyncio.sleep(WARM_SECONDS)
        cold = [p for p in range(sizes.partitions) if not prober.log.routed(p)]
        if cold:
            raise RuntimeError(f"no probe routed on partitions {cold} before the kill")

        read_before = await by_table(dep_b, RECORDS_READ)
        a_before, b_before = holdings(workers["a"], probes["a"]), holdings(workers["b"], probes["b"])
        if a_before is None or a_before.owned != a_before.partitions_active(dep_a.changelog("users")):
            raise RuntimeError(f"worker a's events and users partitions differ: {a_before}")
        moved = sorted(a_before.owned)
        result["partitions_taken_over"] = moved
        survivor_rss = RssSampler(workers["b"].process.pid).start() if workers["b"].process else None
        result["load_average_at_kill"] = os.getloadavg()
        a = workers["a"].process
        assert a is not None
        os.kill(a.pid, signal.SIGKILL)
        killed_at = result["killed_at"] = time.time()
        a.wait()
        survivor = Survivor(dep_b, killed_at)
        tail = await standby_tail(bootstrap, b_before)
        await watch_takeover(survivor, prober, moved)
        prober.stop.set()
        await producing
        deadline = time.time() + DRAIN_SECONDS
        while prober.log.missing() and time.time() < deadline:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.25)
        await asyncio.sleep(2.0)  # late duplicates
        if survivor_rss is not None:
            survivor_rss.stop()
        read_after = await by_table(dep_b, RECORDS_READ)

        resumed = prober.log.resumed(killed_at, moved)
        result.update(
            {
                "kill_to_not_ready_seconds": survivor.not_ready_at,
                "kill_to_ready_seconds": survivor.ready_again_at,
                "survivor_readiness": survivor.readiness.summary(),
                **prober.log.figures(killed_at, moved, sizes.partitions),
                "records_read_by_table": {
                    t: read_after.get(t, 0) - read_before.get(t, 0) for t in read_after
                },
                "standby_tail_at_kill": tail,
                "table_keys_after": await table_keys(dep_b),
                "survivor_peak_rss_takeover_bytes": survivor_rss.peak if survivor_rss else 0,
                "survivor_timeline": milestones(dep_b.log(workers["b"].log_name), killed_at),
            }
        )
        result["records_read"] = sum(result["records_read_by_table"].values())
        result["ok"] = survivor.ready_again_at is not None and all(s is not None for s in resumed.values())
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc)[-1500:]}"
    finally:
        prober.stop.set()
        stop_watching.set()
        for task in (producing, watcher):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        for name, worker in workers.items():
            result[f"stop_seconds_{name}"] = worker.stop()
            result[f"peak_rss_bytes_{name}"] = worker.peak_rss
    result["survivor_peak_rss_bytes"] = result["peak_rss_bytes_b"]
    return result
