"""The in-app side of a deployment as the in-app measurements run it: a worker (memory store: it answers each
new socket's welcome on its internal endpoint and turns in-app records into feed records) and gateway
processes, each `python -m streams gateway` as `herald gateway` runs it."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field

from adapters.broker.embedded import free_port
from adapters.broker.topics import ensure_topics
from bench.deployment import Deployment, wait_http_ok


@dataclass
class InAppStack:
    dep: Deployment
    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    worker: subprocess.Popen[bytes] | None = None
    gateways: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)  # by port

    @property
    def inapp(self) -> str:
        return self.dep.topic("deliver.inapp")

    @property
    def feed(self) -> str:
        return self.dep.topic("inbox.feed")

    async def topics(self) -> None:
        """The in-app, commands and feed topics (the worker makes them too; the bench may write first)."""
        names = [self.inapp, self.dep.topic("inbox.commands"), self.feed]
        await ensure_topics([self.dep.bootstrap], names, self.dep.partitions, 1, compacted=set())

    async def start_worker(self, env: dict[str, str] | None = None) -> float:
        """Seconds to the worker's /readyz."""
        self.worker = self.dep.spawn("bench.worker", log_name=f"worker-{self.dep.prefix}", env=env)
        try:
            return await wait_http_ok(self.dep.readyz, self.worker, timeout=300)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n{self.dep.log(f'worker-{self.dep.prefix}')[-3000:]}") from None

    def gateway_env(self, port: int) -> dict[str, str]:
        return {**self.dep.env, "HERALD_JWT_SECRET": self.jwt_secret, "HERALD_GATEWAY_PORT": str(port)}

    def spawn_gateway(self, name: str) -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        gateway = self.dep.spawn("streams", "gateway", log_name=name, env=self.gateway_env(port))
        self.gateways[port] = gateway
        return port, gateway

    async def start_gateway(self, name: str) -> tuple[int, subprocess.Popen[bytes], float]:
        """(port, process, seconds from spawn to /readyz 200)."""
        port, gateway = self.spawn_gateway(name)
        try:
            ready = await wait_http_ok(f"http://127.0.0.1:{port}/readyz", gateway, timeout=120)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n{self.dep.log(name)[-3000:]}") from None
        return port, gateway, ready

    def stop_gateway(self, port: int) -> None:
        gateway = self.gateways.pop(port, None)
        if gateway is not None:
            self.dep.stop(gateway)

    def stop(self) -> None:
        for port in list(self.gateways):
            self.stop_gateway(port)
        if self.worker is not None:
            self.dep.stop(self.worker)
            self.worker = None
