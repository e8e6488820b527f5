"""Read deadlines and a body cap for uvicorn's HTTP/1.1 protocol, on the gateway and the worker's ops port: a
slow-loris client (one that withholds or dribbles its headers or its body) cannot hold a connection open,
and no request body is read past the cap. uvicorn alone starts no timer before a request's headers are in,
and none while a body arrives."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True, slots=True)
class ReadLimits:
    header_seconds: float  # from the connection (or a request's first byte) to the end of its headers
    body_seconds: float  # from the end of the headers to the end of the body
    max_body_bytes: int  # a declared or received body over this is not read further


class _StoppableFlow(FlowControl):
    """uvicorn's flow control, except that reading, once stopped, stays stopped whatever the app asks."""

    stopped = False

    def stop(self) -> None:
        self.stopped = True
        self.pause_reading()

    def resume_reading(self) -> None:
        if not self.stopped:
            super().resume_reading()


def limited_protocol(limits: ReadLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `limits`; pass it as `uvicorn.Config(http=...)`.

    - Headers: a deadline from the connection, and for each later request on it from its first byte (uvicorn's
      keep-alive timeout ends at that byte). A WebSocket handshake is such a request.
    - Body: a deadline from the end of the headers. Past either deadline the connection is closed; an app
      waiting for the body then sees the client disconnect.
    - Size: a declared Content-Length over the cap stops reading before the first body byte, and a chunked
      body stops being read once past it; the app still answers (its own limit gives the 413).
    - A response sent before its request's body was read to the end closes the connection, rather than
      reading the rest to find the next request.
    """

    class LimitedProtocol(HttpToolsProtocol):
        _header_deadline: asyncio.TimerHandle | None = None
        _body_deadline: asyncio.TimerHandle | None = None
        _body_read = 0
        flow: _StoppableFlow

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.flow = _StoppableFlow(transport)
            self._arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadlines()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._body_read = 0
            self._arm_header_deadline()

        def on_headers_complete(self) -> None:
            self._cancel_deadlines()
            super().on_headers_complete()
            if self.parser.should_upgrade() and self._should_upgrade():
                return  # the WebSocket protocol takes the connection over
            self._body_deadline = self.loop.call_later(limits.body_seconds, self._expire)
            declared = dict(self.headers).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > limits.max_body_bytes:
                self.flow.stop()

        def on_body(self, body: bytes) -> None:
            if self.flow.stopped:
                return  # past the cap: dropped, and nothing more is read
            self._body_read += len(body)
            super().on_body(body)
            if self._body_read > limits.max_body_bytes:
                self.flow.stop()

        def on_message_complete(self) -> None:
            self._cancel_deadlines()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
                self.transport.close()
            super().on_response_complete()

        def _arm_header_deadline(self) -> None:
            if self._header_deadline is None:
                self._header_deadline = self.loop.call_later(limits.header_seconds, self._expire)

        def _cancel_deadlines(self) -> None:
            for deadline in (self._header_deadline, self._body_deadline):
                if deadline is not None:
                    deadline.cancel()
            self._header_deadline = self._body_deadline = None

        def _expire(self) -> None:
            self._header_deadline = self._body_deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return LimitedProtocol
