"""The WebSocket servers under measurement in `bench.ws_stacks`, one per process:
`python -m bench.ws_stack_servers STACK PORT [CONTROL_FILE]`.

The ASGI stacks serve the same Starlette app, which holds each socket as the gateway does (a bounded queue,
its own sender task, a reader task, an end event, an expiry timer); picows is a raw server, the floor;
`gateway` is Herald's own app and server, with a feed that broadcasts on SIGUSR1 instead of reading Kafka, and
a stand-in for the workers' inbox endpoint in its own process (`owner`: every inbox empty)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import orjson
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from bench.deployment import raise_fd_limit
from bench.feed_records import feed_headers, feed_value
from gateway.feed import FeedRecord, FeedSink, decode
from kernel.readiness import Readiness
from schemas.inbox import InboxCommand

HOST: Final = "127.0.0.1"
# The gateway's defaults (kernel/settings.py), applied wherever a stack has the setting.
MAX_FRAME_BYTES: Final = 64 * 1024
PING_SECONDS: Final = 20.0
QUEUE_SIZE: Final = 256
EXPIRY_SECONDS: Final = 3600.0
BROADCAST: Final = "broadcast "  # "broadcast K" from a client: K frames to every open socket

# stack -> (uvicorn's ws implementation, its loop)
UVICORN: Final = {
    "uvicorn-websockets": ("websockets", "uvloop"),
    "uvicorn-sansio": ("websockets-sansio", "uvloop"),
    "uvicorn-sansio-asyncio": ("websockets-sansio", "asyncio"),
    "uvicorn-wsproto": ("wsproto", "uvloop"),
}
STACKS: Final = (*UVICORN, "hypercorn", "granian", "picows", "gateway")
# The bearer secret between the `gateway` stack and its `owner`.
INTERNAL_SECRET: Final = "bench-internal-secret-" + "0" * 16


def more_open_files(wanted: int = 1 << 16) -> None:
    """Raise the open-files limit to `wanted` where allowed (root may raise the hard limit; the machine's is
    20,000, one short of 20,000 sockets and a control socket), else to the hard limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (ValueError, OSError):
            pass
    raise_fd_limit()


def welcome() -> bytes:
    return b'{"type":"welcome","v":1,"user_id":"u0","unread":0,"expires_at":%d}' % int(time.time() + 3600)


def notification(k: int) -> bytes:
    """A notification frame of about 300 bytes, shaped like the gateway's."""
    body = {
        "notification_id": f"ntf_{k:012d}",
        "event_id": f"evt_{k:012d}",
        "event_type": "bench.fanout",
        "recipient": "u0",
        "channel": "inapp",
        "occurred_at": "2025-01-01T00:00:00Z",
        "created_at": "2025-01-01T00:00:00Z",
        "title": "Order shipped",
        "body": "Parcel 1Z999 arrives on Thursday.",
        "data": {"k": k},
    }
    return b'{"type":"notification","v":1,"unread":1,"read":false,"notification":%b}' % orjson.dumps(body)


class Peer(Protocol):
    def push(self, frame: bytes) -> None: ...


class Hub:
    """Every open socket; a broadcast queues each frame on each of them without awaiting."""

    def __init__(self) -> None:
        self.peers: set[Peer] = set()

    def broadcast(self, count: int) -> None:
        for k in range(count):
            frame = notification(k)
            for peer in tuple(self.peers):
                peer.push(frame)


def command(text: str | None) -> int | None:
    """The frame count of a broadcast command, or None for any other text."""
    if text is None or not text.startswith(BROADCAST):
        return None
    return int(text.removeprefix(BROADCAST))


class AsgiPeer:
    """One socket, held as `gateway.connections.Connection` holds it."""

    def __init__(self, websocket: WebSocket, hub: Hub) -> None:
        self._websocket = websocket
        self._hub = hub
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.ended = asyncio.Event()

    def push(self, frame: bytes) -> None:
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:  # the gateway closes a client this slow
            self._hub.peers.discard(self)
            self.ended.set()

    async def send_loop(self) -> None:
        try:
            while True:
                frame = await self._queue.get()
                await self._websocket.send_text(frame.decode())
                self._queue.task_done()
        except Exception:
            self.ended.set()

    async def read_loop(self) -> None:
        while True:
            message = await self._websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.ended.set()
                return
            count = command(message.get("text"))
            if count is not None:
                self._hub.broadcast(count)


def starlette_app() -> Starlette:
    """The ASGI app every ASGI stack serves (granian imports it as a factory)."""
    hub = Hub()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        peer = AsgiPeer(websocket, hub)
        peer.push(welcome())
        hub.peers.add(peer)
        sender = asyncio.create_task(peer.send_loop())
        reader = asyncio.create_task(peer.read_loop())
        expiry = asyncio.get_running_loop().call_later(EXPIRY_SECONDS, peer.ended.set)
        try:
            await peer.ended.wait()
        finally:
            hub.peers.discard(peer)
            expiry.cancel()
            for task in (reader, sender):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


def serve_uvicorn(implementation: str, loop: str, port: int) -> None:
    import uvicorn

    config = uvicorn.Config(
        starlette_app(),
        host=HOST,
        port=port,
        ws=implementation,
        http="httptools",
        loop=loop,
        lifespan="off",
        access_log=False,
        log_level="warning",
        ws_max_size=MAX_FRAME_BYTES,
        ws_ping_interval=PING_SECONDS,
        ws_ping_timeout=PING_SECONDS,
        backlog=2048,
    )
    uvicorn.Server(config).run()


def serve_hypercorn(port: int) -> None:
    import uvloop
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{HOST}:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.backlog = 2048
    config.websocket_max_message_size = MAX_FRAME_BYTES
    config.websocket_ping_interval = PING_SECONDS
    app: Any = starlette_app()
    uvloop.run(serve(app, config))


def serve_granian(port: int) -> None:
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    # granian's ASGI WebSocket has no setting for a frame size limit or for pings.
    Server(
        "bench.ws_stack_servers:starlette_app",
        address=HOST,
        port=port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        factory=True,
        log_access=False,
        websockets=True,
        backlog=2048,
    ).serve()


def serve_picows(port: int) -> None:
    import uvloop
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

    hub = Hub()

    class PicowsPeer(WSListener):
        transport: WSTransport

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.transport = transport
            hub.peers.add(self)
            transport.send(WSMsgType.TEXT, welcome())

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                count = command(frame.get_payload_as_ascii_text())
                if count is not None:
                    hub.broadcast(count)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            hub.peers.discard(self)

        def push(self, frame: bytes) -> None:
            self.transport.send(WSMsgType.TEXT, frame)

    def listener(request: WSUpgradeRequest) -> PicowsPeer:
        return PicowsPeer()

    async def serve() -> None:
        server = await ws_create_server(
            listener,
            HOST,
            port,
            enable_auto_ping=True,
            auto_ping_idle_timeout=PING_SECONDS,
            auto_ping_reply_timeout=PING_SECONDS,
            max_frame_size=MAX_FRAME_BYTES,
            backlog=2048,
        )
        await server.serve_forever()

    uvloop.run(serve())


class SignalFeed:
    """The gateway's feed for the bench: positioned at once; on SIGUSR1 it reads "K N" from `control` and
    hands the inbox service K notification frames for each of users u0 … u{N-1}, each decoded from its key,
    value and headers as the Kafka feed decodes them. Making each frame (the worker's work, about 2 µs) is
    counted in the gateway's CPU here."""

    def __init__(self, control: Path) -> None:
        self._control = control
        self._seqs: dict[str, int] = {}
        self._sent = 0
        self.readiness = Readiness(True, "signal feed")

    async def run(self, sink: FeedSink) -> None:
        sink.positioned()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self._broadcast, sink)
        await asyncio.Event().wait()  # until cancelled

    def _broadcast(self, sink: FeedSink) -> None:
        count, users = (int(x) for x in self._control.read_text().split())
        template = orjson.loads(notification(0))["notification"]
        for _ in range(count):
            records: list[FeedRecord] = []
            for user in range(users):
                self._sent += 1
                user_id = f"u{user}"
                seq = self._seqs[user_id] = self._seqs.get(user_id, 0) + 1
                template.update(notification_id=f"ntf_{self._sent:012d}", recipient=user_id)
                value = feed_value(orjson.dumps(template), seq)
                records.append(decode(user_id.encode(), value, feed_headers(seq)))
            sink.feed(records)


class NoWriter:
    """Inbox changes go nowhere: the bench sends no marking commands."""

    async def write(self, command: InboxCommand) -> None:
        return None


def serve_gateway(port: int, control: Path) -> None:
    """Herald's gateway app and server as `herald gateway` builds them, on uvloop as it runs them, with
    `SignalFeed` for Kafka; the JWT secret comes from HERALD_JWT_SECRET, the owner's URL from
    HERALD_GATEWAY_WORKER_URL (an `owner` process)."""
    import uvloop

    from gateway.app import build_server, create_app
    from kernel.settings import load_settings

    settings = load_settings(gateway_host=HOST, gateway_port=port, internal_secret=INTERNAL_SECRET)
    app = create_app(settings, feed=SignalFeed(control), writer=NoWriter())
    uvloop.run(build_server(app, settings).serve())


def serve_owner(port: int) -> None:
    """The workers' inbox endpoint, every inbox empty: the welcome of each new `gateway` socket comes from
    here, over HTTP, as it comes from a worker."""
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def session(request: Request) -> Response:
        return Response(b'{"seq":0,"unread":0}', media_type="application/json")

    async def page(request: Request) -> Response:
        return Response(b'{"items":[],"unread":0,"next_before":null,"seq":0}', media_type="application/json")

    app = Starlette(
        routes=[
            Route("/internal/inbox/session", session, methods=["POST"]),
            Route("/internal/inbox/page", page, methods=["POST"]),
        ]
    )
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False, loop="uvloop")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    stack, port = args[0], int(args[1])
    more_open_files()
    if stack in UVICORN:
        serve_uvicorn(*UVICORN[stack], port)
    elif stack == "hypercorn":
        serve_hypercorn(port)
    elif stack == "granian":
        serve_granian(port)
    elif stack == "picows":
        serve_picows(port)
    elif stack == "gateway":
        serve_gateway(port, Path(args[2]))
    elif stack == "owner":
        serve_owner(port)
    else:
        raise SystemExit(f"unknown stack {stack!r}; one of {', '.join(STACKS)}")


if __name__ == "__main__":
    main()
