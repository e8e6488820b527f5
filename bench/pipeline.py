"""Measurements (1) to (3): the raw pass-through limit, Herald's sustained pipeline rate over the same
backlog, and end-to-end latency at half that rate. Providers are real (SMTP, Twilio SDK) against local
sinks."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from tqdm import tqdm

from adapters.broker.embedded import free_port
from adapters.broker.topics import ensure_topics
from bench.deployment import Deployment, wait_http_ok
from bench.observe import (
    Arrivals,
    CoresUsed,
    MainThreadTime,
    RssSampler,
    latency_summary,
    steady_rate,
    watch_topics,
)
from bench.sizes import Sizes
from bench.workload import (
    CHANNELS,
    backlog,
    event,
    fast_producer,
    parse_stamp,
    produce_all,
    table_records,
    user_id,
)

FANOUT = len(CHANNELS)


def provider_env(
    dep: Deployment, rules: Path, templates: Path, smtp_port: int, http_port: int
) -> dict[str, str]:
    return {
        "HERALD_RULES_FILE": str(rules),
        "HERALD_TEMPLATES_DIR": str(templates),
        "HERALD_EMAIL_PROVIDERS": "smtp",
        "HERALD_SMTP_HOST": "127.0.0.1",
        "HERALD_SMTP_PORT": str(smtp_port),
        "HERALD_SMS_PROVIDERS": "twilio",
        "HERALD_TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "HERALD_TWILIO_AUTH_TOKEN": "bench",
        "HERALD_TWILIO_FROM": "+14155550100",
        "HERALD_TWILIO_BASE_URL": f"http://127.0.0.1:{http_port}",
    }


async def load_tables(deps: Sequence[Deployment], users: int, label: str) -> float:
    """Write `users` profiles and preferences to each deployment's table changelogs; returns seconds taken.

    Records are generated once and produced to every deployment (the memory phase runs two at a time).
    No workaround for Tansu's short end offsets is needed: the worker's transport checks them
    (adapters/broker/faust_transport.py), and `table_keys` confirms every user was recovered."""
    for dep in deps:
        await ensure_topics(
            [dep.bootstrap],
            [dep.changelog("users"), dep.changelog("preferences")],
            dep.partitions,
            1,
            compacted=set(),
        )
    started = time.monotonic()
    names = [{"users": dep.changelog("users"), "preferences": dep.changelog("preferences")} for dep in deps]

    def records() -> Iterator[tuple[str, int | None, bytes, bytes]]:
        for table, partition, key, value in table_records(users, deps[0].partitions):
            for topics in names:
                yield topics[table], partition, key, value

    producer = fast_producer(deps[0].bootstrap)
    with tqdm(total=users * 2 * len(deps), desc=f"load {label}", unit="rec", leave=False) as bar:
        await asyncio.to_thread(produce_all, producer, records(), bar.update)
    return time.monotonic() - started


async def table_keys(dep: Deployment) -> dict[str, int]:
    """`herald_table_keys{table}` from the worker's /metrics: how many keys each table recovered."""
    return await by_table(dep, "herald_table_keys")


async def by_table(dep: Deployment, metric: str) -> dict[str, int]:
    """A per-table metric (`metric{table="..."}`) from the worker's /metrics."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(dep.readyz.replace("/readyz", "/metrics"), timeout=30.0)).text
    values = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            name = line.split('table="', 1)[1].split('"', 1)[0]
            values[name] = int(float(line.rsplit(" ", 1)[1]))
    return values


async def run_passthrough(dep: Deployment, client: str, source: str, events: int) -> dict[str, Any]:
    sink = f"{dep.prefix}.passthrough.{client}"
    await ensure_topics([dep.bootstrap], [sink], dep.partitions, 1, compacted=set())
    out = dep.tmp / f"passthrough-{client}.json"
    process = dep.spawn(
        "bench.passthrough",
        client,
        dep.bootstrap,
        source,
        sink,
        str(events),
        str(out),
        log_name=f"pass-{client}",
    )
    with tqdm(desc=f"limit ({client})", total=None, leave=False, bar_format="{desc}: {elapsed}") as bar:
        while process.poll() is None:
            await asyncio.sleep(0.2)
            bar.update(0)
    if process.returncode != 0:
        raise RuntimeError(f"pass-through ({client}) failed:\n{dep.log(f'pass-{client}')[-2000:]}")
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    result["events_per_second"] = result["events"] / result["seconds"]
    return result


class HeraldUnderTest:
    """A worker and its provider sinks for one run of a deployment."""

    def __init__(
        self, dep: Deployment, rules: Path, templates: Path, *, store: str | None = None, workers: int = 1
    ) -> None:
        self.dep = dep
        self.smtp_port, self.http_port = free_port(), free_port()
        self.sinks_out = dep.tmp / f"sinks-{dep.prefix}-{dep.run}.json"
        self.env = {**dep.env, **provider_env(dep, rules, templates, self.smtp_port, self.http_port)}
        if store:
            self.env["BENCH_STORE"] = store
        self.workers = workers
        self.worker: subprocess.Popen[bytes] | None = None
        # Workers past the first (`workers`): the same app id, so they share the partitions through the
        # consumer group, each with its own port and data directory, as docs/OPERATIONS.md runs one per core.
        self.others: list[subprocess.Popen[bytes]] = []
        self.sinks: subprocess.Popen[bytes] | None = None
        self.rss: RssSampler | None = None
        self.ready_seconds = 0.0

    async def start(self) -> None:
        self.sinks = self.dep.spawn(
            "bench.sinks",
            str(self.sinks_out),
            str(self.smtp_port),
            str(self.http_port),
            log_name=f"sinks-{self.dep.run}",
        )
        spawned = time.monotonic()
        self.worker = self.dep.spawn("bench.worker", log_name=f"worker-{self.dep.run}", env=self.env)
        self.rss = RssSampler(self.worker.pid).start()
        ready = [(self.dep.readyz, self.worker, f"worker-{self.dep.run}")]
        for n in range(1, self.workers):
            port, name = free_port(), f"worker-{self.dep.run}-{n}"
            env = {
                **self.env,
                "HERALD_WORKER_PORT": str(port),
                "HERALD_DATA_DIR": f"{self.env['HERALD_DATA_DIR']}-{n}",
            }
            self.others.append(self.dep.spawn("bench.worker", log_name=name, env=env))
            ready.append((f"http://127.0.0.1:{port}/readyz", self.others[-1], name))
        for url, process, name in ready:
            try:
                await wait_http_ok(url, process, timeout=900)
            except Exception as exc:
                raise RuntimeError(f"{exc}\n{self.dep.log(name)[-3000:]}") from None
        self.ready_seconds = time.monotonic() - spawned  # until the last worker is ready

    @property
    def roles(self) -> dict[int, str]:
        """Its processes by role (`workers`, `sinks`), as bench.observe.CoresUsed counts them."""
        workers = ([self.worker] if self.worker else []) + self.others
        sinks = [self.sinks] if self.sinks else []
        return {p.pid: "workers" for p in workers} | {p.pid: "sinks" for p in sinks}

    def stop(self) -> dict[str, Any]:
        """Stops both; returns what the sinks saw."""
        if self.rss is not None:
            self.rss.stop()
        for process in [*self.others, *([self.worker] if self.worker else [])]:
            self.dep.stop(process)
        if self.sinks is not None:
            self.dep.stop(self.sinks)
        if self.sinks_out.exists():
            seen: dict[str, Any] = orjson.loads(self.sinks_out.read_bytes())
            return seen
        return {"rows": {"email": [], "sms": []}, "unstamped": 0}


def completed(inapp_topic: str) -> Callable[[Any], bool]:
    """A notification done: a `delivered` status record (email, SMS) or an in-app record on its topic. An
    in-app notification's own `delivered` status (stored in the inbox) is not counted again: it was, from
    the sixth session on, so every in-app notification counted twice."""

    def done(record: Any) -> bool:
        if record.topic == inapp_topic:
            return True
        return b'"outcome":"delivered"' in record.value and b'"channel":"inapp"' not in record.value

    return done


class ChannelArrivals:
    """When each channel's completions arrived: in-app records on their topic, email and SMS `delivered`
    statuses (the records `completed` counts, told apart by channel)."""

    def __init__(self, inapp_topic: str) -> None:
        self._inapp_topic = inapp_topic
        self.times: dict[str, list[float]] = {channel: [] for channel in CHANNELS}

    def note(self, record: Any) -> None:
        if record.topic == self._inapp_topic:
            channel = "inapp"
        else:
            channel = orjson.loads(record.value).get("channel", "")
        self.times.setdefault(channel, []).append(time.time())

    def rates(self) -> dict[str, float]:
        return {channel: steady_rate(times) for channel, times in self.times.items()}


def start_profiler(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(py_spy):
        return None
    return subprocess.Popen(  # noqa: S603 - py-spy from our own environment
        [py_spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50", "-f", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


async def measure_pipeline(
    bootstrap: str, tmp: Path, sizes: Sizes, rules: Path, templates: Path, *, profile: bool = False
) -> dict[str, Any]:
    dep = Deployment(bootstrap, tmp, prefix="pipe", partitions=sizes.partitions, run="tp")
    # The latency run's worker has its own app id and tables, and recovers them while the pipeline's
    # worker recovers its own (recovery is one core per worker; two cores). It then waits, idle, through
    # the pipeline run; its CPU time over that window is recorded as `latency_worker_idle_cpu_seconds`.
    lat = Deployment(bootstrap, tmp, prefix="lat", partitions=sizes.partitions, run="lat")
    for d in (dep, lat):
        await ensure_topics(
            [bootstrap],
            [d.topic("events"), d.topic("status"), d.topic("deliver.inapp")],
            sizes.partitions,
            1,
            compacted=set(),
        )
    load_seconds = await load_tables([dep, lat], sizes.users, f"{sizes.users:,} users, 2 workers")
    with tqdm(total=sizes.events, desc="backlog", unit="ev", leave=False) as bar:
        await asyncio.to_thread(
            produce_all,
            fast_producer(bootstrap),
            backlog(dep.topic("events"), sizes.events, sizes.users, dep.run),
            bar.update,
        )

    limits = {}
    for client in ("confluent", "aiokafka"):
        limits[client] = await run_passthrough(dep, client, dep.topic("events"), sizes.events)
    best = max(limits.values(), key=lambda r: float(r["events_per_second"]))

    # BENCH_WORKERS runs that many pipeline workers (one per core, docs/OPERATIONS.md); 1 by default.
    herald = HeraldUnderTest(dep, rules, templates, workers=int(os.environ.get("BENCH_WORKERS", "1")))
    waiting = HeraldUnderTest(lat, rules, templates)
    arrivals = Arrivals()
    by_channel = ChannelArrivals(dep.topic("deliver.inapp"))
    stop = asyncio.Event()
    expected = sizes.events * FANOUT
    profiler = None
    idle_cpu = worker_cpu = float("nan")
    cores: dict[str, float] = {}
    try:
        try:
            with tqdm(
                desc="workers recovering", total=None, leave=False, bar_format="{desc} {elapsed}"
            ) as bar:
                starting = asyncio.ensure_future(asyncio.gather(herald.start(), waiting.start()))
                while not starting.done():
                    await asyncio.wait([starting], timeout=0.5)
                    bar.update(0)
                starting.result()
            assert waiting.worker is not None
            roles = {**waiting.roles, **herald.roles, waiting.worker.pid: "latency worker (idle)"}
            machine = CoresUsed(roles)
            watcher = asyncio.create_task(
                watch_topics(
                    bootstrap,
                    [dep.topic("status"), dep.topic("deliver.inapp")],
                    completed(dep.topic("deliver.inapp")),
                    arrivals,
                    stop,
                    by_channel.note,
                )
            )
            started = time.time()
            with tqdm(total=expected, desc="herald pipeline", unit="ntf", leave=False) as bar:
                while len(arrivals.times) < expected and time.time() - started < sizes.pipeline_seconds:
                    await asyncio.sleep(0.25)
                    bar.update(len(arrivals.times) - bar.n)
                    if profile and profiler is None and len(arrivals.times) > expected * 0.05:
                        assert herald.worker is not None
                        profiler = start_profiler(herald.worker.pid, 20, tmp / "worker-profile.txt")
            cpu = machine.cpu_seconds()
            idle_cpu, worker_cpu = cpu["latency worker (idle)"], cpu["workers"]
            cores = machine.cores()
            ended = time.time()
            stop.set()
            await watcher
        finally:
            if profiler is not None:
                profiler.wait(timeout=60)
            seen = herald.stop()
        # Delivered in the window, per channel: in-app records on their topic (the router's output, stored
        # by the inbox), email and SMS as the sinks received them. Not their `delivered` statuses: a delivery
        # step produces those for a whole chunk of up to HERALD_BATCH_SIZE deliveries once the chunk is done,
        # so whether a chunk's thousand statuses fell inside the window decided the figure (tenth session).
        # The worker starts on the backlog as soon as it is ready, a little before `started` (after the
        # readiness poll): what the sinks received before it counts, and the window opens at the first of
        # it. At the tiny size under load every SMS could arrive before `started`, and the figure read 0.
        received = {
            channel: [at for _, _, at in seen["rows"][channel] if at <= ended] for channel in ("email", "sms")
        }
        opened = min([started, *(min(times) for times in received.values() if times)])
        window = max(1e-9, ended - opened)
        delivered = {
            "inapp": len(by_channel.times["inapp"]),
            **{channel: len(times) for channel, times in received.items()},
        }
        notifications_per_second = sum(delivered.values()) / window
        # An event is through when its last channel is: the slowest channel's rate.
        events_per_second = min(delivered.values()) / window
        pipeline = {
            "users": sizes.users,
            "table_load_seconds": load_seconds,
            "worker_ready_seconds": herald.ready_seconds,
            "workers": herald.workers,
            "notifications_completed": len(arrivals.times),
            "notifications_expected": expected,
            "events_per_second": events_per_second,
            "notifications_per_second": notifications_per_second,
            "delivered_in_window": delivered,
            "delivered_per_second": {channel: n / window for channel, n in delivered.items()},
            # The estimate earlier sessions reported: the 10-90% rate of the completions seen on the topics.
            "status_steady_notifications_per_second": steady_rate(arrivals.times),
            "ratio_to_limit": events_per_second / float(best["events_per_second"]),
            "worker_peak_rss_bytes": herald.rss.peak if herald.rss else 0,
            "drained": len(arrivals.times) >= expected,
            "latency_worker_idle_cpu_seconds": idle_cpu,
            # The workers' own CPU (all their threads), over the window, per notification delivered in it (as
            # counted above): Herald's work per notification, whatever the sinks and the broker could take.
            "worker_cpu_seconds": worker_cpu,
            "worker_cpu_us_per_notification": worker_cpu / max(1, sum(delivered.values())) * 1e6,
            "window_seconds": window,
            # Cores each part used from the workers' readiness to the end of the window (their sum is the
            # machine's, within what the kernel counts apart): whether the cores were what bound the run.
            "cores_used": cores,
            # Per channel, the same steady window: in-app records are the router's output (one per event,
            # so this is Herald's routing rate, while the same worker delivers), email and SMS deliveries.
            "by_channel_per_second": by_channel.rates(),
            "completed_by_channel": {channel: len(times) for channel, times in by_channel.times.items()},
            "routing_events_per_second": by_channel.rates()["inapp"],
        }
        limit = {
            "by_client": limits,
            "client": best["client"],
            "events_per_second": best["events_per_second"],
        }
        # BENCH_LATENCY_RATE fixes the rate, to compare latency between runs of different throughput. Then at
        # half that again: how far below the drained rate live traffic must stay to meet the latency targets.
        rate = float(os.environ.get("BENCH_LATENCY_RATE", "0")) or max(1.0, events_per_second / 2)
        latency, quarter = await measure_latency(waiting, sizes, [rate, max(1.0, rate / 2)])
    finally:
        waiting.stop()
    for run in (latency, quarter):
        run["worker_ready_seconds"] = waiting.ready_seconds
        run["ratio_to_limit_offered"] = run["offered_events_per_second"] / float(best["events_per_second"])
    return {"limit": limit, "pipeline": pipeline, "latency": latency, "latency_quarter": quarter}


async def measure_latency(
    herald: HeraldUnderTest, sizes: Sizes, rates: Sequence[float]
) -> list[dict[str, Any]]:
    """End-to-end latency at each of `rates` events/s in turn, through `herald`, started and idle; stops it at
    the end. Each run's events have ids of their own (a repeated id is a duplicate), and its email and SMS
    arrivals are told apart by the send time stamped in them."""
    runs: list[dict[str, Any]] = []
    try:
        for n, rate in enumerate(rates):
            runs.append(await _offer(herald, sizes, rate, f"{herald.dep.run}-{n}"))
    finally:
        seen = herald.stop()
    for run in runs:
        began, ended = run.pop("sent_between")
        rows = {
            channel: [(r - s) for _, s, r in seen["rows"][channel] if began <= s <= ended]
            for channel in ("email", "sms")
        }
        providers = rows["email"] + rows["sms"]
        run["provider"] = latency_summary(providers)
        run["by_channel"] = {
            "email": latency_summary(rows["email"]),
            "sms": latency_summary(rows["sms"]),
            "inapp_topic": latency_summary(run.pop("inapp")),
        }
        run["cdf_ms"] = sorted(x * 1000 for x in providers)
    return runs


async def _offer(herald: HeraldUnderTest, sizes: Sizes, rate: float, run: str) -> dict[str, Any]:
    """Offer `rate` events/s for the run's length; wait for their in-app records and the stragglers. Also
    what the workers used meanwhile: at a low rate a step carries few records, and its fixed costs (produce
    requests, fetch rounds, agent wake-ups) are shared by few notifications (bench/RESULTS.md, seventeenth
    session)."""
    dep = herald.dep
    inapp: list[float] = []
    arrivals = Arrivals()
    stop = asyncio.Event()

    def on_inapp(record: Any) -> None:
        stamp = parse_stamp(orjson.loads(record.value).get("body", ""))
        # The topic is read from its start: an earlier run's records are not this run's.
        if stamp is not None and stamp[1] >= began_wall:
            inapp.append(time.time() - stamp[1])

    def is_inapp(record: Any) -> bool:
        return True

    total = int(rate * sizes.latency_seconds)
    began_wall = time.time()
    watcher = asyncio.create_task(
        watch_topics(dep.bootstrap, [dep.topic("deliver.inapp")], is_inapp, arrivals, stop, on_inapp)
    )
    try:
        producer = fast_producer(dep.bootstrap)
        producer_topic = dep.topic("events")
        assert herald.worker is not None
        main_thread = MainThreadTime(herald.worker.pid)
        machine = CoresUsed(herald.roles)
        began = time.monotonic()
        sent = 0
        with tqdm(total=total, desc=f"latency @ {rate:,.0f} ev/s", unit="ev", leave=False) as bar:
            while sent < total:
                due = min(total, int((time.monotonic() - began) * rate) + 1)
                while sent < due:
                    recipient = user_id(sent % max(1, sizes.users))
                    producer.produce(
                        producer_topic, event(sent, recipient, time.time(), run), recipient.encode()
                    )
                    sent += 1
                producer.poll(0)
                bar.update(sent - bar.n)
                await asyncio.sleep(0.005)
        producer.flush(30)
        offered_seconds = time.monotonic() - began
        worker_cpu = machine.cpu_seconds()["workers"]
        threads, cores = main_thread.shares(), machine.cores()
        ended_wall = time.time()
        deadline = time.monotonic() + 20
        while len(inapp) < total and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # let the email and SMS stragglers arrive
    finally:
        stop.set()
        await watcher
    return {
        "offered_events_per_second": total / offered_seconds,
        "events": total,
        "sent_between": (began_wall, ended_wall),
        "inapp": inapp,
        # While the events were offered: the workers' CPU per notification offered, the main thread's time
        # run and waited for a core, and every part's cores (the workers' among them).
        "worker_cpu_us_per_notification": worker_cpu / max(1, total * FANOUT) * 1e6,
        "worker_main_thread": threads,
        "cores_used": cores,
    }
