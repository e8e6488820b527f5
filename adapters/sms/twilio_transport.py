"""The HTTP client Herald hands the Twilio SDK (its extension point for custom clients, `AsyncHttpClient`):
aiohttp over kept-alive connections, as many as the requests in flight, a deadline per request, no retries and
no log line per request."""

from __future__ import annotations

import base64
import logging
from typing import Any

import aiohttp
from twilio.http import AsyncHttpClient
from twilio.http.response import Response

# The SDK's own asynchronous client (`AsyncTwilioHttpClient`, twilio 9.13) does three things Herald cannot
# have: it passes `timeout=None` on to aiohttp, which then waits forever; it builds an `aiohttp.BasicAuth`,
# deprecated since aiohttp 3.14 (a warning per request); and it logs about ten lines per request at INFO.
log = logging.getLogger("herald.twilio")


class TwilioHttp(AsyncHttpClient):  # type: ignore[misc]  # the SDK is untyped
    def __init__(self, *, timeout: float, max_connections: int) -> None:
        super().__init__(log, True, timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _connections(self) -> aiohttp.ClientSession:
        # Built on first use: aiohttp builds a session only on a running loop.
        if self._closed:
            raise RuntimeError("the Twilio client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self._max_connections))
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  # the SDK's interface
        allow_redirects: bool = False,
    ) -> Response:
        sent_headers = dict(headers or {})
        if auth is not None:
            credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            sent_headers["Authorization"] = f"Basic {credentials}"
        async with self._connections().request(
            method.upper(),
            url,
            params=params,
            data=data,
            headers=sent_headers,
            # Never None: aiohttp takes that for "no deadline at all".
            timeout=aiohttp.ClientTimeout(total=timeout if timeout is not None else self.timeout),
            allow_redirects=allow_redirects,
        ) as response:
            return Response(response.status, await response.text(), response.headers)

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
