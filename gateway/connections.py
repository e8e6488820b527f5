"""Open sockets by user id, each with an outbound queue bounded in frames and bytes, and its own sender so
none delays another; each takes a user's feed records once, in order, by the inbox sequence it has seen."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, Protocol

from gateway.metrics import GatewayMetrics
from schemas.websocket import CloseReason

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 256
DEFAULT_QUEUE_BYTES = 1024 * 1024
# Bounds how long a stopping connection waits for its close frame to be written to a client that stalled.
CLOSE_TIMEOUT_SECONDS = 5.0


class FrameSink(Protocol):
    """The part of a WebSocket a connection writes to (Starlette's `WebSocket` is one)."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class TooManyConnections(Exception):
    """The user already has the maximum number of connections open on this instance."""

    retriable = True


class Draining(Exception):
    """The instance is shutting down and takes no new connections."""

    retriable = True


class Connection:
    """One authenticated socket: frames are queued without waiting and written by a task of its own that runs
    only while frames are queued, and the socket is read in the server's own task for it (`serve`): most
    sockets are idle, and a task, a queue and their waiters per socket were about a tenth of an idle socket's
    memory.

    The queue holds at most `queue_size` frames and `queue_bytes` bytes; a frame's bytes count from when it is
    queued until its write returns, so the frame being written to a stalled client counts too.

    Until `begin`, the socket is starting: its user's feed records are held (within the same bounds) while
    the owner is asked for the snapshot; `begin` then queues the snapshot's frames and the held records above
    its sequence. From then on a record is queued only if its sequence is above the last one queued, so a
    record read twice, or one the snapshot already covered, is not sent again."""

    __slots__ = (
        "_closer",
        "_ended",
        "_ended_event",
        "_expiry",
        "_held",
        "_held_bytes",
        "_max_bytes",
        "_max_frames",
        "_metrics",
        "_on_close",
        "_queue",
        "_reader",
        "_reader_stopped",
        "_sender",
        "_sink",
        "closed",
        "expires_at",
        "peak_queued_bytes",
        "queued_bytes",
        "seen",
        "user_id",
    )

    def __init__(
        self,
        user_id: str,
        sink: FrameSink,
        metrics: GatewayMetrics,
        *,
        queue_size: int,
        queue_bytes: int,
        expires_at: float,
        on_close: Callable[[Connection], None] | None = None,
    ) -> None:
        self.user_id = user_id
        # Told as soon as the server closes it, before its close frame goes out (which may take a while).
        self._on_close = on_close
        self._sink = sink
        self._metrics = metrics
        # Each item is (frame, is_notification); only notifications count as pushed messages. Created with
        # the first frame and dropped when written out.
        self._queue: deque[tuple[bytes, bool]] | None = None
        self._max_frames = queue_size
        self._max_bytes = queue_bytes
        self.queued_bytes = 0
        # The most `queued_bytes` has been: never above `queue_bytes`.
        self.peak_queued_bytes = 0
        self._sender: asyncio.Task[None] | None = None
        # The task reading the socket (see `serve`), and whether the connection's end stopped it.
        self._reader: asyncio.Task[Any] | None = None
        self._reader_stopped = False
        self._closer: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.closed = False
        # Whether the socket is done (see `ended`); its event exists only once someone waits for it.
        self._ended = False
        self._ended_event: asyncio.Event | None = None
        self.expires_at = expires_at
        # The user's inbox sequence of the last record queued; None while starting.
        self.seen: int | None = None
        self._held: list[tuple[int, bytes, bool]] = []
        self._held_bytes = 0

    @property
    def ended(self) -> asyncio.Event:
        """Set once the socket is done: the client left, or the server's close went out (or timed out)."""
        if self._ended_event is None:
            self._ended_event = asyncio.Event()
            if self._ended:
                self._ended_event.set()
        return self._ended_event

    def left(self) -> None:
        """The client went away (or answered the server's close)."""
        self._end()

    def deliver(self, seq: int, frame: bytes, *, notification: bool) -> bool:
        """Queue a feed record's frame unless the socket has seen `seq`; held while starting. False if the
        connection is closed or was just closed as too slow."""
        if self.closed:
            return False
        if self.seen is None:
            if len(self._held) >= self._max_frames or self._held_bytes + len(frame) > self._max_bytes:
                return self._too_slow()
            self._held.append((seq, frame, notification))
            self._held_bytes += len(frame)
            return True
        if seq <= self.seen:
            return True
        self.seen = seq
        return self._offer(frame, is_notification=notification)

    def begin(self, seq: int, first: Sequence[tuple[bytes, bool]]) -> bool:
        """Queue the snapshot's frames (welcome, recovered notifications: (frame, is_notification)), then the
        records held since the socket registered whose sequence is above the snapshot's `seq`, in order."""
        held, self._held, self._held_bytes = self._held, [], 0
        self.seen = seq
        for frame, notification in first:
            if not self._offer(frame, is_notification=notification):
                return False
        for record_seq, frame, notification in held:
            if not self.deliver(record_seq, frame, notification=notification):
                return False
        return True

    def push(self, frame: bytes) -> bool:
        """Queue a notification frame; False if the connection is closed or was just closed as too slow."""
        return self._offer(frame, is_notification=True)

    def reply(self, frame: bytes) -> bool:
        """Queue a protocol frame (welcome, pong, inbox, error …), in order with everything else queued."""
        return self._offer(frame, is_notification=False)

    def _offer(self, frame: bytes, *, is_notification: bool) -> bool:
        if self.closed:
            return False
        queued = self.queued_bytes + len(frame)
        # The frame being written counts against the bytes (released when its write returns), not the frames.
        if (self._queue is not None and len(self._queue) >= self._max_frames) or queued > self._max_bytes:
            return self._too_slow()
        if self._queue is None:
            self._queue = deque()
        self._queue.append((frame, is_notification))
        self.queued_bytes = queued
        self.peak_queued_bytes = max(self.peak_queued_bytes, queued)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued(), name="gateway-sender")
        return True

    def _too_slow(self) -> bool:
        log.info("closing a slow client connection: outbound queue full")
        self._metrics.slow_client_disconnects.inc()
        self.close(CloseReason.SLOW_CLIENT, flush=False)
        return False

    def close(self, reason: CloseReason, *, flush: bool = True) -> None:
        """Close the socket with `reason` (and its code); with `flush`, queued frames are written first."""
        if self.closed:
            return
        self.closed = True
        if self._on_close is not None:
            self._on_close(self)
        if self._expiry is not None:
            self._expiry.cancel()
        if not flush:
            if self._sender is not None:
                # The sender may be stuck writing to this very client; cancel it so the close goes out now.
                self._sender.cancel()
            self._drop_queued()
        self._closer = asyncio.create_task(self._close(reason, flush=flush), name="gateway-close")

    async def _close(self, reason: CloseReason, *, flush: bool) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                if flush and self._sender is not None and not self._sender.done():
                    # It writes out what is queued and ends; nothing more is queued once closed.
                    await asyncio.shield(self._sender)
                await self._sink.close(reason.code, reason.value)
        except Exception as exc:
            # The client may already be gone, or stalled so the close frame cannot be written.
            log.debug("close %d not sent: %s", reason.code, type(exc).__name__)
        finally:
            self._end()

    async def serve(self, reader: Coroutine[Any, Any, None]) -> None:
        """Run `reader` (the socket's receive loop) in the calling task until it returns or the connection
        ends otherwise (the server's close went out, or a write failed). Reading in the server's task rather
        than a task of its own keeps an idle socket to one task."""
        task = asyncio.current_task()
        assert task is not None
        if self._ended:
            reader.close()
            return
        self._reader = task
        try:
            await reader
        except asyncio.CancelledError:
            # Only the cancel `_end` asked for is swallowed: one from elsewhere (the server stopping) stands.
            if not self._reader_stopped or task.uncancel() > 0:
                raise
        finally:
            self._reader = None

    def _end(self) -> None:
        """The socket is done: wake whoever waits for it and stop its reader, unless the reader is the one
        ending it."""
        self._ended = True
        if self._ended_event is not None:
            self._ended_event.set()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            self._reader_stopped = True
            reader.cancel()

    def expire_at(self, expires_at: float) -> None:
        """(Re)arm the timer that closes the connection when its token expires."""
        self.expires_at = expires_at
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(0.0, expires_at - time.time())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        if not self.closed:
            self._metrics.connections_closed.labels(reason=CloseReason.EXPIRED_TOKEN.value).inc()
            self.close(CloseReason.EXPIRED_TOKEN)

    def start(self) -> None:
        self.expire_at(self.expires_at)

    async def stop(self) -> None:
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._closer is not None:
            with contextlib.suppress(Exception):
                await self._closer
        self._end()

    def _drop_queued(self) -> None:
        """Let go of frames that will never be written (the one being written is released by its writer)."""
        self._held, self._held_bytes = [], 0
        queue, self._queue = self._queue, None
        for frame, _ in queue or ():
            self.queued_bytes -= len(frame)

    async def _send_queued(self) -> None:
        """Write the queued frames in order, and end when none is left."""
        try:
            while self._queue:
                frame, is_notification = self._queue.popleft()
                try:
                    await self._sink.send_text(frame.decode())
                finally:
                    self.queued_bytes -= len(frame)
                if is_notification:
                    self._metrics.messages_pushed.inc()
            self._queue = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Almost always the client going away mid-write; the socket's receive side sees the disconnect.
            log.debug("connection sender stopped: %s", type(exc).__name__)
            self.closed = True
            self._end()


class ConnectionRegistry:
    """Which connections are open for which user on this instance; fans frames out to one user's sockets."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_per_user: int = 10,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if queue_bytes < 1:
            raise ValueError("queue_bytes must be at least 1")
        self._metrics = metrics
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self._max_per_user = max_per_user
        self._by_user: dict[str, set[Connection]] = {}
        self.draining = False

    def __len__(self) -> int:
        return sum(len(connections) for connections in self._by_user.values())

    def admit(self, user_id: str) -> None:
        """Raise if a new connection for `user_id` may not open now."""
        if self.draining:
            raise Draining()
        if len(self._by_user.get(user_id, ())) >= self._max_per_user:
            raise TooManyConnections()

    @contextlib.asynccontextmanager
    async def connect(self, user_id: str, sink: FrameSink, *, expires_at: float) -> AsyncIterator[Connection]:
        """Register a socket, starting (see `Connection`), for the duration of the block."""
        self.admit(user_id)
        connection = Connection(
            user_id,
            sink,
            self._metrics,
            queue_size=self.queue_size,
            queue_bytes=self.queue_bytes,
            expires_at=expires_at,
            on_close=self._discard,
        )
        self._by_user.setdefault(user_id, set()).add(connection)
        self._metrics.connections_open.inc()
        connection.start()
        try:
            yield connection
        finally:
            self._discard(connection)
            await connection.stop()

    def deliver(self, user_id: str, seq: int, frame: bytes, *, notification: bool) -> int:
        """Offer a feed record to each of `user_id`'s connections; returns how many are still open."""
        connections = self._by_user.get(user_id)
        if not connections:
            return 0
        accepted = 0
        for connection in tuple(connections):
            if connection.deliver(seq, frame, notification=notification):
                accepted += 1
            else:
                self._discard(connection)
        return accepted

    def connected(self, user_id: str) -> bool:
        return bool(self._by_user.get(user_id))

    def of(self, user_id: str) -> tuple[Connection, ...]:
        """The user's open connections on this instance."""
        return tuple(self._by_user.get(user_id, ()))

    def close_every(self, reason: CloseReason) -> list[Connection]:
        """Close every connection with `reason` after what is already queued for it; returns them."""
        everyone = [c for connections in self._by_user.values() for c in connections]
        for connection in everyone:
            connection.close(reason)
        return everyone

    async def close_all(self, reason: CloseReason = CloseReason.GOING_AWAY) -> None:
        """Stop admitting, then close every connection with `reason` and wait until each is closed."""
        self.draining = True
        everyone = self.close_every(reason)
        if everyone:
            await asyncio.wait([asyncio.create_task(c.ended.wait()) for c in everyone])

    def _discard(self, connection: Connection) -> None:
        connections = self._by_user.get(connection.user_id)
        if connections is None or connection not in connections:
            return
        connections.discard(connection)
        if not connections:
            del self._by_user[connection.user_id]
        self._metrics.connections_open.dec()
