"""The worker's operations endpoint: /healthz, /readyz and /metrics, served by uvicorn on Faust's own loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator, Sequence
from typing import Any

import uvicorn
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

Check = Callable[[], tuple[bool, str]]


def readiness(app: Any, extra_checks: Sequence[Check] = ()) -> tuple[bool, str]:
    """Ready means: partitions assigned, no rebalance under way, tables recovered, feeds caught up."""
    if app.rebalancing:
        return False, "rebalancing"
    try:
        assigned = app.consumer.assignment()
    except Exception:  # the consumer does not exist until the app has started it
        return False, "starting"
    if not assigned:
        return False, "no partitions assigned yet"
    if not app.tables.recovery.completed.is_set():
        return False, "tables recovering"
    for check in extra_checks:
        ready, why = check()
        if not ready:
            return False, why
    return True, "ready"


def create_ops_app(
    faust_app: Any,
    registry: CollectorRegistry,
    extra_checks: Sequence[Check] = (),
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        ready, why = readiness(faust_app, extra_checks)
        return JSONResponse({"ready": ready, "reason": why}, status_code=200 if ready else 503)

    async def metrics(_: Request) -> Response:
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            *extra_routes,
        ]
    )


class _EmbeddedUvicorn(uvicorn.Server):
    # Faust's worker owns SIGINT/SIGTERM; uvicorn must not replace its handlers.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class OpsServer(Service):
    """Started with the app (before table recovery), so /healthz answers while the worker is joining."""

    def __init__(
        self,
        faust_app: Any,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        extra_checks: Sequence[Check] = (),
        extra_routes: Sequence[BaseRoute] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        config = uvicorn.Config(
            create_ops_app(faust_app, registry, extra_checks, extra_routes),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._server = _EmbeddedUvicorn(config)
        self._task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self._task = asyncio.ensure_future(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error, e.g. the port is in use
                raise RuntimeError("ops server stopped during start-up")
            await asyncio.sleep(0.02)

    async def on_stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, timeout=5)
