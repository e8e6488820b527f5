"""`python -m bench [--quick]`: every measurement in one run on an embedded broker; JSON, PNG and a table."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import psutil

from adapters.broker.embedded import EmbeddedBroker, free_port
from bench.deployment import ROOT, raise_fd_limit
from bench.report import plot, print_table
from bench.sizes import BY_NAME, FULL, QUICK, Sizes
from bench.workload import write_rules

# The limit is measured with the pipeline, on the same backlog; the peers come after it, to set beside it.
PHASES = ("pipeline", "peers", "memory", "gateway")
# Run only when named in --only: WebSocket server stacks side by side (about 4 minutes; no broker used); the
# worker's state (issue 16, bench.state: cold recovery on each store, a clean restart, delivery cost); the
# in-app side at scale (issue 15, bench.inapp_scale: a gateway's start with the topics full, its memory with
# many users, the most sockets it holds); a standby takeover (issue 16, bench.standby: one of two RocksDB
# workers killed, the survivor routes the dead one's partitions from its standbys).
OPTIONAL_PHASES = ("ws-stacks", "state", "standby", "inapp-scale")


def machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _thin(values: list[float], points: int = 2000) -> list[float]:
    if len(values) <= points:
        return values
    step = len(values) / points
    return [values[int(i * step)] for i in range(points)] + [values[-1]]


async def run(sizes: Sizes, phases: set[str], out: Path, *, profile: bool) -> dict[str, Any]:
    from bench.gateway_load import measure_gateway
    from bench.inapp_scale import measure_inapp_scale
    from bench.memory import measure_memory
    from bench.peers import measure_peers
    from bench.pipeline import measure_pipeline
    from bench.standby import measure_standby
    from bench.state import measure_state
    from bench.ws_stack_servers import STACKS
    from bench.ws_stacks import measure_ws_stacks

    started = time.monotonic()
    result: dict[str, Any] = {"machine": machine(), "sizes": asdict(sizes), "phases": sorted(phases)}
    # The machine is shared: the 1-, 5- and 15-minute load averages at the start and the end of the run.
    result["load_average"] = {"start": os.getloadavg()}
    timings: dict[str, float] = result.setdefault("phase_seconds", {})
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp_name:
        tmp = Path(tmp_name)
        rules, templates = write_rules(tmp / "routing")
        broker = EmbeddedBroker("127.0.0.1", free_port(), log_path=tmp / "broker.log")
        broker.start()
        await asyncio.to_thread(broker.wait_ready)
        try:
            if "pipeline" in phases:
                began = time.monotonic()
                result.update(
                    await measure_pipeline(broker.bootstrap, tmp, sizes, rules, templates, profile=profile)
                )
                if profile and (tmp / "worker-profile.txt").exists():
                    (out / "worker-profile.txt").write_bytes((tmp / "worker-profile.txt").read_bytes())
                timings["pipeline"] = time.monotonic() - began
            if "peers" in phases:
                began = time.monotonic()
                result["peers"] = await measure_peers(
                    broker.bootstrap, tmp, sizes, rules, templates, result.get("pipeline")
                )
                timings["peers"] = time.monotonic() - began
            if "memory" in phases:
                began = time.monotonic()
                result["memory"] = await measure_memory(broker.bootstrap, tmp, sizes, rules, templates)
                timings["memory"] = time.monotonic() - began
            if "gateway" in phases:
                began = time.monotonic()
                result["gateway"], result["inapp"] = await measure_gateway(broker.bootstrap, tmp, sizes)
                timings["gateway"] = time.monotonic() - began
            if "inapp-scale" in phases:
                began = time.monotonic()
                result["inapp_scale"] = await measure_inapp_scale(broker.bootstrap, tmp, sizes)
                timings["inapp-scale"] = time.monotonic() - began
            if "state" in phases:
                began = time.monotonic()
                result["state"] = await measure_state(broker.bootstrap, tmp, sizes, rules, templates)
                timings["state"] = time.monotonic() - began
            if "standby" in phases:
                began = time.monotonic()
                result["standby"] = await measure_standby(broker.bootstrap, tmp, sizes, rules, templates)
                timings["standby"] = time.monotonic() - began
            if "ws-stacks" in phases:
                began = time.monotonic()
                sockets = 5000 if sizes is FULL else 1000
                result["ws_stacks"] = await asyncio.to_thread(measure_ws_stacks, list(STACKS), sockets, 20)
                timings["ws-stacks"] = time.monotonic() - began
        finally:
            broker.stop()
            if os.environ.get("BENCH_KEEP_LOGS"):
                for log in tmp.glob("*.log"):  # noqa: ASYNC240 - a few files, after the run
                    (out / "logs").mkdir(exist_ok=True)
                    (out / "logs" / log.name).write_bytes(log.read_bytes())
    result["load_average"]["end"] = os.getloadavg()
    result["elapsed_seconds"] = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="scaled-down sizes (not comparable with the targets)"
    )
    parser.add_argument("--size", choices=sorted(BY_NAME), help="a named size (full, quick, tiny)")
    parser.add_argument(
        "--only",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES + OPTIONAL_PHASES)} (default: {','.join(PHASES)})",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where results go")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the worker for 20 s of the pipeline run"
    )
    args = parser.parse_args(argv)
    sizes = BY_NAME[args.size] if args.size else (QUICK if args.quick else FULL)
    phases = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = phases - set(PHASES + OPTIONAL_PHASES)
    if unknown:
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    raise_fd_limit()
    args.out.mkdir(parents=True, exist_ok=True)
    if sizes is not FULL:
        print(f"bench: {sizes.name} sizes — scaled down, not comparable with the targets", file=sys.stderr)
    result = asyncio.run(run(sizes, phases, args.out, profile=args.profile))
    for key in ("latency", "latency_quarter"):
        if key in result:
            result[key]["cdf_ms"] = _thin(result[key]["cdf_ms"])
    for g in [*result.get("gateway", []), result.get("inapp", {})]:
        if "cdf_ms" in g:
            g["cdf_ms"] = _thin(g["cdf_ms"])
    (args.out / "result.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    plot(result, args.out / "result.png")
    print(print_table(result))
    if "ws_stacks" in result:
        from bench.ws_stacks import figures_from, table

        print(table(figures_from(result["ws_stacks"])))
    if sizes is not FULL:
        print(
            f"({sizes.name} run: sizes scaled down — users {sizes.users:,}, events {sizes.events:,}; "
            "use the full run for the targets)"
        )
    print(
        f"results: {args.out / 'result.json'}, {args.out / 'result.png'} ({result['elapsed_seconds']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
