"""A deadline for the HTTP request that opens a connection, so a slow-loris client (one that connects and
dribbles or withholds its handshake) cannot hold a socket open: uvicorn starts no timer before a first
response, and the WebSocket ping and idle timeouts only begin once the socket is open."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def with_handshake_deadline(seconds: float) -> type[HttpToolsProtocol]:
    class DeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._deadline = self.loop.call_later(seconds, self._expire)

        def on_headers_complete(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _expire(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

    return DeadlineProtocol
