"""The gateway's composition root: the app (`/ws`, `/inbox`, `/preferences`, `/demo`, health, metrics) and its
server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import prometheus_client
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from adapters import garbage_collector
from adapters.http.read_limits import ReadLimits, limited_protocol
from gateway.commands import CommandWriter, KafkaCommandWriter
from gateway.connections import ConnectionRegistry
from gateway.feed import FeedSource
from gateway.feed_kafka import KafkaFeed
from gateway.http_api import InboxHttp
from gateway.inbox_service import InboxService
from gateway.keys import verifier_from_settings
from gateway.metrics import GatewayMetrics
from gateway.origins import OriginPolicy
from gateway.owner import owner_from_settings
from gateway.preference_center import PreferenceCenter
from gateway.preferences_http import PreferencesHttp
from gateway.preferences_writer import KafkaPreferencesWriter, PreferencesWriter
from gateway.session import SessionPolicy, Sessions
from kernel import access_logs
from kernel.logs import gateway_logging_config
from kernel.ports import ensure_port_free
from kernel.settings import Settings
from kernel.topics import TopicNames

log = logging.getLogger(__name__)

DEMO_PAGE: Final = Path(__file__).resolve().parent / "static" / "demo.html"


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    feed: FeedSource | None = None,
    writer: CommandWriter | None = None,
    preferences_writer: PreferencesWriter | None = None,
) -> Starlette:
    """Wire the gateway; `feed`, `writer` and `preferences_writer` default to Kafka, the owner is the workers'
    internal endpoint (HERALD_GATEWAY_WORKER_URL). `app.state` exposes the parts tests look at."""
    verifier = verifier_from_settings(settings)
    owner = owner_from_settings(settings)
    origins = OriginPolicy.parse(settings.gateway_allowed_origins)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = GatewayMetrics(registry)
    connections = ConnectionRegistry(
        metrics,
        queue_size=settings.gateway_send_queue_size,
        queue_bytes=settings.gateway_send_queue_bytes,
        max_per_user=settings.gateway_max_connections_per_user,
    )
    names = TopicNames.from_settings(settings)
    kafka_writer = None
    if writer is None:
        writer = kafka_writer = KafkaCommandWriter(settings.bootstrap_servers, names.inbox_commands)
    service = InboxService(
        owner, writer, connections, metrics, answer_timeout_seconds=settings.gateway_owner_timeout_seconds
    )
    kafka_preferences = None
    if preferences_writer is None:
        preferences_writer = kafka_preferences = KafkaPreferencesWriter(
            settings.bootstrap_servers, names.preferences
        )
    center = PreferenceCenter(owner, preferences_writer, metrics)
    if feed is None:
        feed = KafkaFeed(
            settings.bootstrap_servers,
            names.inbox_feed,
            metrics,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            busy_fetch_max_wait_ms=settings.gateway_busy_fetch_max_wait_ms,
            idle_fetch_max_wait_ms=settings.idle_fetch_max_wait_ms,
        )
    source: FeedSource = feed
    sessions = Sessions(
        verifier,
        origins,
        service,
        center,
        connections,
        metrics,
        SessionPolicy(idle_timeout_seconds=settings.gateway_idle_timeout_seconds),
    )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        readiness = source.readiness
        return PlainTextResponse(readiness.reason, status_code=200 if readiness.ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def demo(request: Request) -> Response:
        return FileResponse(DEMO_PAGE, media_type="text/html; charset=utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(source.run(service), name="gateway-feed")
        task.add_done_callback(_log_feed_exit)
        try:
            yield
        finally:
            # Normally every socket is closed already (GatewayServer); this covers servers that are not.
            await connections.close_all()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            for producer in (kafka_writer, kafka_preferences):
                if producer is not None:
                    with contextlib.suppress(Exception):
                        await producer.stop()
            await owner.aclose()

    app = Starlette(
        routes=[
            WebSocketRoute("/ws", sessions.endpoint),
            *InboxHttp(verifier, service, metrics).routes(),
            *PreferencesHttp(verifier, center, metrics).routes(),
            Route("/demo", demo),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
        ],
        lifespan=lifespan,
    )
    app.state.connections = connections
    app.state.service = service
    return app


def _log_feed_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # /readyz reports the failure; the log carries the traceback.
        log.error("gateway feed stopped", exc_info=task.exception())


class GatewayServer(uvicorn.Server):
    """uvicorn, but on shutdown every socket is first closed with 1001 (going away), after the frames
    already queued for it, so clients reconnect elsewhere; uvicorn alone would send 1012."""

    def __init__(self, config: uvicorn.Config, connections: ConnectionRegistry) -> None:
        super().__init__(config)
        self._connections = connections

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self._connections.close_all()
        await super().shutdown(sockets)


def build_server(app: Starlette, settings: Settings) -> uvicorn.Server:
    """A uvicorn server for `app` that never logs tokens: no access log, and no query string in any line."""
    config = uvicorn.Config(
        app,
        log_config=gateway_logging_config(settings),
        # Slow-loris: deadlines on every request's headers (the WebSocket handshake too) and on bodies; the
        # inbox's HTTP commands are no bigger than the same commands as frames.
        http=limited_protocol(
            ReadLimits(
                header_seconds=settings.gateway_handshake_timeout_seconds,
                body_seconds=settings.gateway_body_timeout_seconds,
                max_body_bytes=settings.gateway_max_frame_bytes,
            )
        ),
        host=settings.gateway_host,
        port=settings.gateway_port,
        lifespan="on",
        access_log=False,
        server_header=False,
        ws_max_size=settings.gateway_max_frame_bytes,
        ws_ping_interval=settings.gateway_ping_interval_seconds,
        ws_ping_timeout=settings.gateway_ping_timeout_seconds,
        ws_per_message_deflate=settings.gateway_ws_compression,
        timeout_graceful_shutdown=10,
    )
    # After Config, which applies uvicorn's logging configuration; uvicorn logs handshakes on uvicorn.error.
    access_logs.install()
    connections: ConnectionRegistry = app.state.connections
    return GatewayServer(config, connections)


async def serve(settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
    """Run the gateway until stopped (`herald gateway`); metrics default to the process-wide registry."""
    ensure_port_free(settings.gateway_host, settings.gateway_port, "HERALD_GATEWAY_PORT")
    registry = registry if registry is not None else prometheus_client.REGISTRY
    garbage_collector.tune(settings.gc_gen0_threshold)
    garbage_collector.Pauses().install(registry)
    app = create_app(settings, registry=registry)
    await build_server(app, settings).serve()
