"""The worker's background services, as mode services started with the app: the operations endpoint (with
its watch on table recovery) and the consumer-lag refresh."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator, Sequence
from typing import Any

import uvicorn
from mode import Service
from prometheus_client import CollectorRegistry
from starlette.routing import BaseRoute

from adapters.http.read_limits import ReadLimits, limited_protocol
from kernel import access_logs
from streams.ops.lag import ConsumerLag
from streams.ops.recovery import RecoveryWatch
from streams.ops.server import Check, create_ops_app


class _EmbeddedUvicorn(uvicorn.Server):
    # Faust's worker owns SIGINT/SIGTERM; uvicorn must not replace its handlers.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class OpsServer(Service):
    """Started with the app (before table recovery), so /healthz answers while the worker is joining. Its
    connections have read deadlines and a body cap (`limits`), so no client can hold one open.

    It samples table recovery every `recovery_interval` seconds (`recovery`, by default a RecoveryWatch
    exporting its metrics to `registry`): often enough to note where each partition's reading begins, at the
    cost of reading a few dicts of Faust's."""

    recovery_interval: float = 0.1

    def __init__(
        self,
        faust_app: Any,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        extra_checks: Sequence[Check] = (),
        extra_routes: Sequence[BaseRoute] = (),
        limits: ReadLimits,
        recovery: RecoveryWatch | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.recovery = recovery if recovery is not None else RecoveryWatch(faust_app, registry)
        config = uvicorn.Config(
            create_ops_app(faust_app, registry, extra_checks, extra_routes, self.recovery),
            host=host,
            port=port,
            http=limited_protocol(limits),
            # No configuration of its own: uvicorn's lines go to the worker's handler, JSON and redacted.
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            lifespan="off",
        )
        access_logs.install()
        self._server = _EmbeddedUvicorn(config)
        self._task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self._task = asyncio.ensure_future(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error, e.g. the port is in use
                raise RuntimeError("ops server stopped during start-up")
            await asyncio.sleep(0.02)

    @Service.task
    async def _watch_recovery(self) -> None:
        while not self.should_stop:
            self.recovery.sample()
            await self.sleep(self.recovery_interval)

    async def on_stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, timeout=5)


class ConsumerLagService(Service):
    """Refreshes a ConsumerLag every `interval` seconds for as long as the worker runs."""

    def __init__(self, lag: ConsumerLag, interval: float = 15.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lag = lag
        self.interval = interval

    @Service.task
    async def _refresh(self) -> None:
        while not self.should_stop:
            await self.lag.refresh_or_count()
            await self.sleep(self.interval)

    async def on_stop(self) -> None:
        await self.lag.aclose()
