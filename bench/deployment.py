"""One Herald deployment under measurement: its app id, topic names, environment and processes."""

from __future__ import annotations

import asyncio
import os
import resource
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from adapters.broker.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]


def raise_fd_limit() -> None:
    """Up to the hard limit: 10,000 sockets need more than the usual 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Deployment:
    """Topic names are `<prefix>.<name>.<run>`; the app id (and so the table changelogs) is shared by runs."""

    bootstrap: str
    tmp: Path
    prefix: str
    partitions: int
    run: str = "0"
    extra_env: dict[str, str] = field(default_factory=dict)
    worker_port: int = field(default_factory=free_port)
    # Between the deployment's gateways and workers (the workers' internal inbox endpoint).
    internal_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def app_id(self) -> str:
        return f"herald-{self.prefix}"

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}.{self.run}"

    def changelog(self, table: str) -> str:
        return f"{self.app_id}-{table}-changelog"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        # BENCH_HERALD_X=v sets HERALD_X=v for the workers: a setting tried on purpose, not one inherited.
        env.update(
            {k.removeprefix("BENCH_"): v for k, v in os.environ.items() if k.startswith("BENCH_HERALD_")}
        )
        env.update(
            {
                "HERALD_BROKER": f"kafka://{self.bootstrap}",
                "HERALD_APP_ID": self.app_id,
                "HERALD_PARTITIONS": str(self.partitions),
                "HERALD_DATA_DIR": str(self.tmp / f"data-{self.prefix}-{self.run}"),
                # The same store in every run (BENCH_STORE=rocksdb:// swaps it, see bench/worker.py).
                "HERALD_STORE": "memory",
                "HERALD_TOPIC_EVENTS": self.topic("events"),
                "HERALD_TOPIC_USERS": f"{self.prefix}.users",
                "HERALD_TOPIC_PREFERENCES": f"{self.prefix}.preferences",
                "HERALD_TOPIC_RULES": f"{self.prefix}.rules",
                "HERALD_TOPIC_ROUTED": self.topic("routed"),
                "HERALD_TOPIC_INAPP": self.topic("deliver.inapp"),
                "HERALD_TOPIC_EMAIL": self.topic("deliver.email"),
                "HERALD_TOPIC_PUSH": self.topic("deliver.push"),
                "HERALD_TOPIC_SMS": self.topic("deliver.sms"),
                "HERALD_TOPIC_STATUS": self.topic("status"),
                "HERALD_TOPIC_SCHEDULED_PREFIX": self.topic("scheduled"),
                "HERALD_TOPIC_DLQ": self.topic("dlq"),
                "HERALD_INBOX_COMMANDS_TOPIC": self.topic("inbox.commands"),
                "HERALD_INBOX_FEED_TOPIC": self.topic("inbox.feed"),
                "HERALD_INTERNAL_SECRET": self.internal_secret,
                "HERALD_WORKER_PORT": str(self.worker_port),
                "HERALD_GATEWAY_WORKER_URL": f"http://127.0.0.1:{self.worker_port}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def spawn(
        self, module: str, *args: str, log_name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{log_name}.log", "wb")
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=env if env is not None else self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_fd_limit,
        )
        log.close()
        self.processes.append(process)
        return process

    @property
    def readyz(self) -> str:
        return f"http://127.0.0.1:{self.worker_port}/readyz"

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            self.stop(process)


async def wait_http_ok(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> float:  # noqa: ASYNC109
    """Seconds until `url` answered 200; raises if the process died first."""
    started = time.monotonic()
    async with httpx.AsyncClient() as client:
        while time.monotonic() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode} before {url} was ready")
            try:
                if (await client.get(url, timeout=1.0)).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout} s")
