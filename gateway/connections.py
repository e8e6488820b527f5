"""Open sockets by user id, each with a bounded outbound queue and its own sender so none delays another."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from gateway.metrics import GatewayMetrics
from gateway.protocol import CLOSE_SLOW_CLIENT, SLOW_CLIENT_REASON

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 256
# Bounds how long a stopping connection waits for its close frame to be written to a client that stalled.
CLOSE_TIMEOUT_SECONDS = 5.0


class FrameSink(Protocol):
    """The part of a WebSocket a connection writes to (Starlette's `WebSocket` is one)."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class Connection:
    """One authenticated socket: frames are queued without waiting and written by its own task."""

    def __init__(self, user_id: str, sink: FrameSink, metrics: GatewayMetrics, *, queue_size: int) -> None:
        self.user_id = user_id
        self._sink = sink
        self._metrics = metrics
        # Each item is (frame, is_notification); only notifications count as pushed messages.
        self._queue: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue(maxsize=queue_size)
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self.closed = False

    def push(self, frame: bytes) -> bool:
        """Queue a notification frame; False if the connection is closed or was just closed as too slow."""
        return self._offer(frame, is_notification=True)

    def reply(self, frame: bytes) -> bool:
        """Queue a protocol frame (welcome, pong, error), behind any notifications already queued."""
        return self._offer(frame, is_notification=False)

    def _offer(self, frame: bytes, *, is_notification: bool) -> bool:
        if self.closed:
            return False
        try:
            self._queue.put_nowait((frame, is_notification))
        except asyncio.QueueFull:
            log.info("closing a slow client connection: outbound queue full")
            self._metrics.slow_client_disconnects.inc()
            self._close(CLOSE_SLOW_CLIENT, SLOW_CLIENT_REASON)
            return False
        return True

    def _close(self, code: int, reason: str) -> None:
        self.closed = True
        # The sender may be stuck writing to this very client; cancel it so the close frame goes out now.
        if self._sender is not None:
            self._sender.cancel()
        self._closer = asyncio.create_task(self._sink.close(code, reason), name="gateway-close")

    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_loop(), name="gateway-sender")

    async def stop(self) -> None:
        self.closed = True
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._closer is not None:
            # The client may already be gone, in which case closing fails; either way the socket is done.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._closer, CLOSE_TIMEOUT_SECONDS)

    async def _send_loop(self) -> None:
        try:
            while True:
                frame, is_notification = await self._queue.get()
                await self._sink.send_text(frame.decode())
                if is_notification:
                    self._metrics.messages_pushed.inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Almost always the client going away mid-write; the socket's receive side sees the disconnect.
            log.debug("connection sender stopped: %s", type(exc).__name__)
            self.closed = True


class ConnectionRegistry:
    """Which connections are open for which user on this instance; fans frames out to one user's sockets."""

    def __init__(self, metrics: GatewayMetrics, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._metrics = metrics
        self._queue_size = queue_size
        self._by_user: dict[str, set[Connection]] = {}

    def __len__(self) -> int:
        return sum(len(connections) for connections in self._by_user.values())

    @contextlib.asynccontextmanager
    async def connect(self, user_id: str, sink: FrameSink, *, greeting: bytes) -> AsyncIterator[Connection]:
        """Register a socket for the duration of the block; `greeting` is its first frame."""
        connection = Connection(user_id, sink, self._metrics, queue_size=self._queue_size)
        # Queued before the connection becomes reachable, so it precedes every notification.
        connection.reply(greeting)
        self._by_user.setdefault(user_id, set()).add(connection)
        self._metrics.connections_open.inc()
        connection.start()
        try:
            yield connection
        finally:
            self._discard(connection)
            await connection.stop()

    def publish(self, user_id: str, frame: bytes) -> int:
        """Queue `frame` on each of `user_id`'s connections; returns how many accepted it."""
        accepted = 0
        for connection in tuple(self._by_user.get(user_id, ())):
            if connection.push(frame):
                accepted += 1
            else:
                self._discard(connection)
        return accepted

    def _discard(self, connection: Connection) -> None:
        connections = self._by_user.get(connection.user_id)
        if connections is None or connection not in connections:
            return
        connections.discard(connection)
        if not connections:
            del self._by_user[connection.user_id]
        self._metrics.connections_open.dec()
