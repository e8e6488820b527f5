"""The gateway's Starlette app and its uvicorn server: `/ws` for clients, plus health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

import prometheus_client
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway import redaction
from gateway.auth import MIN_SECRET_BYTES, AuthError, bearer_token, verify_token
from gateway.connections import DEFAULT_QUEUE_SIZE, ConnectionRegistry
from gateway.consumer import KafkaInAppFeed, NotificationFeed
from gateway.metrics import GatewayMetrics
from gateway.protocol import CLOSE_UNAUTHORIZED, notification_frame, reply_to, welcome_frame
from schemas.notifications import InAppNotification
from streams.ports import ensure_port_free
from streams.settings import ConfigurationError, Settings

log = logging.getLogger(__name__)

# Client frames are small pings; anything larger is refused by uvicorn with close code 1009.
MAX_CLIENT_FRAME_BYTES: Final = 64 * 1024
# Keepalive pings also end sockets whose client vanished or stopped reading without closing.
PING_INTERVAL_SECONDS: Final = 20.0
PING_TIMEOUT_SECONDS: Final = 20.0


def jwt_secret(settings: Settings) -> str:
    """The JWT secret, or ConfigurationError if it is unset or too short for the configured algorithm."""
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret is not None else ""
    if not secret:
        raise ConfigurationError("HERALD_JWT_SECRET: must be set for the gateway to verify client tokens")
    minimum = MIN_SECRET_BYTES[settings.jwt_algorithm]
    if len(secret.encode()) < minimum:
        raise ConfigurationError(
            f"HERALD_JWT_SECRET: must be at least {minimum} bytes for {settings.jwt_algorithm} (RFC 7518 3.2)"
        )
    return secret


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    feed: NotificationFeed | None = None,
    queue_size: int = DEFAULT_QUEUE_SIZE,
) -> Starlette:
    """Wire the gateway. `feed` defaults to the Kafka in-app feed; `app.state.connections` is the registry."""
    secret = jwt_secret(settings)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = GatewayMetrics(registry)
    connections = ConnectionRegistry(metrics, queue_size=queue_size)
    source: NotificationFeed
    if feed is not None:
        source = feed
    else:
        source = KafkaInAppFeed(settings.bootstrap_servers, settings.topic_inapp, metrics)

    def deliver(notification: InAppNotification) -> None:
        connections.publish(notification.recipient, notification_frame(notification))

    async def websocket_endpoint(websocket: WebSocket) -> None:
        token = bearer_token(websocket.headers.get("authorization"), websocket.query_params.get("token"))
        try:
            user_id = verify_token(token, secret=secret, algorithm=settings.jwt_algorithm)
        except AuthError as exc:
            metrics.auth_failures.labels(reason=exc.reason.value).inc()
            # Accepted first so the client receives the code and reason; a refused handshake carries neither.
            await websocket.accept()
            await websocket.close(CLOSE_UNAUTHORIZED, exc.reason.value)
            return
        await websocket.accept()
        async with connections.connect(user_id, websocket, greeting=welcome_frame(user_id)) as connection:
            while not connection.closed:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                connection.reply(reply_to(message.get("text")))

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        readiness = source.readiness
        return PlainTextResponse(readiness.reason, status_code=200 if readiness.ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(source.run(deliver), name="gateway-feed")
        task.add_done_callback(_log_feed_exit)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    app = Starlette(
        routes=[
            WebSocketRoute("/ws", websocket_endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
        ],
        lifespan=lifespan,
    )
    app.state.connections = connections
    return app


def _log_feed_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # /readyz reports the failure; the log carries the traceback.
        log.error("in-app feed stopped", exc_info=task.exception())


def build_server(app: Starlette, settings: Settings) -> uvicorn.Server:
    """A uvicorn server for `app` that never logs tokens: no access log, and handshake paths redacted."""
    config = uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        lifespan="on",
        access_log=False,
        server_header=False,
        ws_max_size=MAX_CLIENT_FRAME_BYTES,
        ws_ping_interval=PING_INTERVAL_SECONDS,
        ws_ping_timeout=PING_TIMEOUT_SECONDS,
    )
    # After Config, which applies uvicorn's logging configuration; uvicorn logs handshakes on uvicorn.error.
    redaction.install("uvicorn", "uvicorn.error", "uvicorn.access")
    return uvicorn.Server(config)


async def serve(settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
    """Run the gateway until stopped (`herald gateway`); metrics default to the process-wide registry."""
    ensure_port_free(settings.gateway_host, settings.gateway_port, "HERALD_GATEWAY_PORT")
    app = create_app(settings, registry=registry if registry is not None else prometheus_client.REGISTRY)
    await build_server(app, settings).serve()
