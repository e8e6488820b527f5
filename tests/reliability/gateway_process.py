"""Gateway processes (`herald gateway`) on a reliability deployment's topics: start, stop with SIGTERM, tokens
they accept, their metrics, and the resident memory of any process the suite runs."""

from __future__ import annotations

import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from adapters.broker.embedded import free_port
from gateway.auth import issue_token
from tests.integration.stack import wait_ready
from tests.reliability.harness import Deployment

# Long enough for HS256 (32 bytes); a secret setting, so the conftest's log search looks for it too.
JWT_SECRET = "reliability-gateway-jwt-secret-" + "s" * 40


def token(user_id: str, ttl_seconds: int = 600) -> str:
    return issue_token(JWT_SECRET, user_id, ttl_seconds)


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    log_file: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def rss(self) -> int:
        return rss_bytes(self.process.pid)

    async def metric(self, name: str, **labels: str) -> float:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{self.http_url}/metrics", timeout=5)).text
        return metric_value(text, name, **labels)


async def start_gateway(
    deployment: Deployment, name: str = "gateway", *, port: int | None = None, **settings: str
) -> Gateway:
    """Spawn a gateway on the deployment's topics, asking its first worker (started here if it is not yet:
    the worker keeps the inboxes), and wait until it is ready. `settings` are extra `HERALD_*` variables for
    this process only."""
    stack = deployment.stack
    port = port or free_port()
    if "worker-1" not in deployment.workers:
        await deployment.start_worker("worker-1")
    saved = dict(stack.extra_env)
    stack.extra_env.update(
        {
            "HERALD_JWT_SECRET": JWT_SECRET,
            "HERALD_GATEWAY_PORT": str(port),
            "HERALD_GATEWAY_WORKER_URL": deployment.url("worker-1", ""),
            **settings,
        }
    )
    try:
        process = stack.spawn("gateway", log_name=name)
    finally:
        # Workers must not inherit one gateway's settings; the secret stays, for the log search.
        stack.extra_env.clear()
        stack.extra_env.update(saved | {"HERALD_JWT_SECRET": JWT_SECRET})
    gateway = Gateway(process, port, stack.tmp / f"{name}.log")
    try:
        await wait_ready(f"{gateway.http_url}/readyz", process, timeout=60)
    except Exception:
        print(gateway.log_file.read_text(errors="replace")[-4000:])
        raise
    return gateway


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples in a Prometheus text page whose labels include `labels`."""
    total = 0.0
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric == name and all(w in label_text for w in wanted):
            total += float(value)
    return total


_VM_RSS = re.compile(r"^VmRSS:\s+(\d+) kB$", re.MULTILINE)


def rss_bytes(pid: int) -> int:
    """Resident set size from /proc (Linux), without psutil, which is only a benchmark dependency."""
    found = _VM_RSS.search(Path(f"/proc/{pid}/status").read_text())
    assert found, f"no VmRSS for pid {pid}"
    return int(found.group(1)) * 1024
