"""Measurement (6, issue 15): WebSocket server stacks side by side, each server in its own process and its
clients in another: RSS per idle socket, CPU per frame sent, sockets held.
`python -m bench.ws_stacks [--connections N] [--frames K] [--stacks a,b]`."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from adapters.broker.embedded import free_port
from bench.deployment import ROOT
from bench.line_process import LineProcess
from bench.ws_stack_servers import HOST, STACKS, more_open_files

SETTLE_SECONDS = 3.0  # after connecting, before reading RSS
IDLE_SECONDS = 2.0  # the idle CPU window
WAIT_SECONDS = 180.0  # for all broadcast frames to arrive


@dataclass
class StackFigures:
    stack: str
    asked: int
    error: str | None = None
    connected: int = 0
    connect_seconds: float = 0.0
    rss_base_bytes: int = 0  # one socket open (the control socket), warmed by one frame
    rss_idle_bytes: int = 0  # plus `connected` idle sockets
    idle_cpu_percent: float = 0.0
    frames_expected: int = 0
    frames: int = 0  # received by the clients during the broadcast
    cpu_seconds: float = 0.0  # the server's user + system CPU from the trigger to the last frame received
    send_seconds: float = 0.0
    held: int = 0  # idle sockets still open after the broadcast


def per_connection_bytes(f: StackFigures) -> float | None:
    if f.error is not None or f.connected == 0:
        return None
    return (f.rss_idle_bytes - f.rss_base_bytes) / f.connected


def cpu_us_per_frame(f: StackFigures) -> float | None:
    if f.error is not None or f.frames == 0:
        return None
    return f.cpu_seconds * 1e6 / f.frames


def table(results: list[StackFigures]) -> str:
    """A Markdown table, with each figure's ratio against the best stack's."""
    kbs = {f.stack: per_connection_bytes(f) for f in results}
    uss = {f.stack: cpu_us_per_frame(f) for f in results}
    best_kb = min((v for v in kbs.values() if v is not None and v > 0), default=None)
    best_us = min((v for v in uss.values() if v is not None and v > 0), default=None)

    def cell(value: float | None, best: float | None, scale: float) -> str:
        if value is None:
            return "—"
        ratio = f" ({value / best:.1f}x)" if best else ""
        return f"{value / scale:,.1f}{ratio}"

    lines = [
        "| stack | KB per idle socket | µs CPU per frame | sockets held | connect s | frames | idle CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in results:
        if f.error is not None:
            lines.append(f"| {f.stack} | failed: {f.error} | | | | | |")
            continue
        lines.append(
            f"| {f.stack} | {cell(kbs[f.stack], best_kb, 1000)} | {cell(uss[f.stack], best_us, 1)} "
            f"| {f.held:,} / {f.asked:,} | {f.connect_seconds:.1f} | {f.frames:,} / {f.frames_expected:,} "
            f"| {f.idle_cpu_percent:.1f}% |"
        )
    return "\n".join(lines)


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_rss(pid: int) -> int:
    """RSS of a server and its children (granian serves from a child process)."""
    total = 0
    for process in _tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def tree_cpu(pid: int) -> float:
    total = 0.0
    for process in _tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class ClientProcess(LineProcess):
    """`bench.ws_stack_clients`, one command line in, one answer line out."""

    def __init__(self, url: str, secret: str | None, log: IO[bytes], *, deflate: bool) -> None:
        args = [url, *([secret] if secret else []), *(["--deflate"] if deflate else [])]
        super().__init__("bench.ws_stack_clients", args, log)

    def ask(self, line: str) -> list[str]:
        return self.ask_now(line)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def _wait_port(port: int, server: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} not open after {timeout} s")


def _stop_server(server: subprocess.Popen[bytes]) -> None:
    try:
        children = psutil.Process(server.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def measure_stack(stack: str, n: int, frames: int, tmp: Path, *, deflate: bool = False) -> StackFigures:
    figures = StackFigures(stack, n)
    port = free_port()
    control = tmp / f"{stack}.control"
    gateway = stack == "gateway"
    secret = secrets.token_hex(32) if gateway else None
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    log = open(tmp / f"{stack}.log", "wb")
    owner: subprocess.Popen[bytes] | None = None
    if secret:
        env["HERALD_JWT_SECRET"] = secret
        # Each new socket's welcome comes from the inbox's owner over HTTP: a stand-in, in its own process.
        owner_port = free_port()
        env["HERALD_GATEWAY_WORKER_URL"] = f"http://{HOST}:{owner_port}"
        owner = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bench.ws_stack_servers", "owner", str(owner_port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench.ws_stack_servers", stack, str(port), str(control)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=more_open_files,
    )
    clients: ClientProcess | None = None

    def trigger(count: int, users: int) -> None:
        if gateway:
            control.write_text(f"{count} {users}")
            server.send_signal(signal.SIGUSR1)
        else:
            assert clients is not None
            clients.ask(f"broadcast {count}")

    try:
        if owner is not None:
            _wait_port(owner_port, owner)
        _wait_port(port, server)
        clients = ClientProcess(f"ws://{HOST}:{port}/ws", secret, log, deflate=deflate)
        if clients.ask("control") != ["ok"]:
            raise RuntimeError("the control socket did not open")
        trigger(1, 1)
        clients.ask(f"wait 1 {WAIT_SECONDS}")
        time.sleep(1.0)
        figures.rss_base_bytes = tree_rss(server.pid)
        _, connected, seconds = clients.ask(f"connect {n}")
        figures.connected, figures.connect_seconds = int(connected), float(seconds)
        time.sleep(SETTLE_SECONDS)
        figures.rss_idle_bytes = tree_rss(server.pid)
        idle_from = tree_cpu(server.pid)
        time.sleep(IDLE_SECONDS)
        figures.idle_cpu_percent = (tree_cpu(server.pid) - idle_from) / IDLE_SECONDS * 100
        figures.frames_expected = (figures.connected + 1) * frames
        cpu_from, began = tree_cpu(server.pid), time.monotonic()
        trigger(frames, figures.connected + 1)
        _, received, _ = clients.ask(f"wait {1 + figures.frames_expected} {WAIT_SECONDS}")
        figures.cpu_seconds = tree_cpu(server.pid) - cpu_from
        figures.send_seconds = time.monotonic() - began
        figures.frames = int(received) - 1
        _, still_open = clients.ask("status")
        figures.held = int(still_open) - 1
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}")
    except Exception as exc:
        figures.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        if clients is not None:
            clients.stop()
        _stop_server(server)
        if owner is not None:
            _stop_server(owner)
        log.close()
    if figures.error is not None:
        tail = (tmp / f"{stack}.log").read_text(errors="replace").strip().splitlines()[-3:]
        figures.error += (" — " + " / ".join(tail)[-300:]) if tail else ""
    return figures


def measure_ws_stacks(
    stacks: list[str], n: int, frames: int, *, deflate: bool = False, progress: bool = True
) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="herald-ws-stacks-") as tmp:
        for stack in stacks:
            if progress:
                print(f"ws-stacks: {stack}, {n:,} sockets, {frames} frames each", file=sys.stderr, flush=True)
            figures = measure_stack(stack, n, frames, Path(tmp), deflate=deflate)
            results.append(
                {
                    **asdict(figures),
                    "kb_per_connection": (per_connection_bytes(figures) or 0) / 1000,
                    "cpu_us_per_frame": cpu_us_per_frame(figures),
                }
            )
    return results


def figures_from(rows: list[dict[str, Any]]) -> list[StackFigures]:
    fields = StackFigures.__dataclass_fields__
    return [StackFigures(**{k: v for k, v in row.items() if k in fields}) for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_stacks", description=__doc__)
    parser.add_argument("--connections", type=int, default=5000, help="idle sockets per stack")
    parser.add_argument("--frames", type=int, default=20, help="broadcast frames to every socket")
    parser.add_argument("--stacks", default=",".join(STACKS), help=f"subset of {','.join(STACKS)}")
    parser.add_argument(
        "--deflate", action="store_true", help="clients offer permessage-deflate, as browsers do"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where results go")
    args = parser.parse_args(argv)
    stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    unknown = set(stacks) - set(STACKS)
    if unknown:
        parser.error(f"unknown stack(s): {', '.join(sorted(unknown))}")
    more_open_files()
    rows = measure_ws_stacks(stacks, args.connections, args.frames, deflate=args.deflate)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ws-stacks.json").write_text(json.dumps(rows, indent=2))
    print(table(figures_from(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
