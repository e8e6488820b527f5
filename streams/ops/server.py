"""The worker's operations endpoint: /healthz, /readyz and /metrics (served by streams.ops.services)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from kernel.readiness import READY, Readiness
from streams.ops.recovery import RecoveryProgress, RecoveryWatch

Check = Callable[[], Readiness]


def recovering(progress: RecoveryProgress) -> Readiness:
    return Readiness(False, "recovering", {"recovery": progress.as_json()})


def readiness(
    app: Any, extra_checks: Sequence[Check] = (), recovery: RecoveryWatch | None = None
) -> Readiness:
    """Ready means: partitions assigned, no rebalance under way, tables recovered, feeds caught up.

    Faust keeps `rebalancing` set until the recovery that follows a rebalance has ended, so a recovery under
    way is told first, with its progress; "rebalancing" is the time before it reads (or after)."""
    recovery = recovery if recovery is not None else RecoveryWatch(app)
    progress = recovery.sample()
    if progress is not None and recovery.in_recovery():
        return recovering(progress)
    if app.rebalancing:
        return Readiness(False, "rebalancing")
    try:
        assigned = app.consumer.assignment()
    except Exception:  # the consumer does not exist until the app has started it
        return Readiness(False, "starting")
    if not assigned:
        return Readiness(False, "no partitions assigned yet")
    if progress is not None:  # assigned, and the first recovery has not completed
        return recovering(progress)
    for check in extra_checks:
        state = check()
        if not state.ready:
            return state
    return READY


def create_ops_app(
    faust_app: Any,
    registry: CollectorRegistry,
    extra_checks: Sequence[Check] = (),
    extra_routes: Sequence[BaseRoute] = (),
    recovery: RecoveryWatch | None = None,
) -> Starlette:
    watch = recovery if recovery is not None else RecoveryWatch(faust_app)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        state = readiness(faust_app, extra_checks, watch)
        return JSONResponse(
            {"ready": state.ready, "reason": state.reason, **state.detail},
            status_code=200 if state.ready else 503,
        )

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
