"""The HTTP client Herald hands firebase-admin's FCM service in place of its own: HTTP/2 over pooled
connections, a bounded number of requests in flight, no retries, OAuth access tokens fetched in a thread."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import google.auth.transport.requests
import httpx
import requests
from google.auth.credentials import Credentials, TokenState

from adapters.executor import SdkThreads

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


class AccessTokens:
    """The service account's OAuth access token. google-auth fetches it synchronously, so it is fetched in a
    thread, one renewal at a time: a token about to expire is renewed while sends go on with it, an expired
    one is waited for."""

    def __init__(self, credential: Credentials, threads: SdkThreads, *, timeout: float) -> None:
        self._credential = credential
        self._threads = threads
        self._session = requests.Session()
        # google-auth's default is 120 s per token request; a send should not wait on one longer than on FCM.
        self._request = functools.partial(
            google.auth.transport.requests.Request(self._session), timeout=timeout
        )
        self._renewal: asyncio.Future[None] | None = None

    async def current(self) -> str:
        """A token to send with; raises google-auth's error when none can be had."""
        state = self._credential.token_state
        if state is not TokenState.FRESH:
            renewal = self._renew()
            if state is TokenState.INVALID:
                await asyncio.shield(renewal)  # a cancelled send must not cancel it for the others
        return str(self._credential.token)

    async def renewed(self, refused: str) -> str:
        """The token to resend with after FCM refused `refused` (renewed unless another send already did)."""
        if self._credential.token == refused:
            await asyncio.shield(self._renew())
        return str(self._credential.token)

    def _renew(self) -> asyncio.Future[None]:
        if self._renewal is None or self._renewal.done():
            self._renewal = self._threads.submit(self._refresh)
            # A renewal started ahead of expiry has no one waiting on it: its error is taken here, and the
            # next send, finding the token expired, renews again and sees the error itself.
            self._renewal.add_done_callback(_retrieve)
        return self._renewal

    def _refresh(self) -> None:
        self._credential.refresh(self._request)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._session.close()


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class FcmHttp:
    """What firebase-admin's messaging service calls for each message (`request`, raising httpx's errors
    as its own client does), at most `max_concurrency` at once."""

    def __init__(self, tokens: AccessTokens, *, timeout: float, max_concurrency: int) -> None:
        self._tokens = tokens
        self._slots = asyncio.Semaphore(max_concurrency)
        # Over TLS FCM speaks HTTP/2, and requests share a connection up to its stream limit; over plain
        # http:// (an emulator) it is HTTP/1.1, a kept-alive connection per request in flight.
        self._client = httpx.AsyncClient(
            http2=True,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._closed = False

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        kwargs.pop("timeout", None)  # the client's own
        async with self._slots:
            token = await self._tokens.current()
            response = await self._send(method, url, headers, token, kwargs)
            if _token_refused(response):
                # Refused before FCM looked at the message, so a resend cannot deliver it twice: once, with
                # a renewed token (firebase-admin's own client renews and resends up to twice).
                renewed = await self._tokens.renewed(token)
                if renewed != token:
                    response = await self._send(method, url, headers, renewed, kwargs)
        return response.raise_for_status()

    async def _send(
        self, method: str, url: str, headers: dict[str, str], token: str, kwargs: dict[str, Any]
    ) -> httpx.Response:
        return await self._client.request(
            method, url, headers={**headers, "authorization": f"Bearer {token}"}, **kwargs
        )

    async def aclose(self) -> None:
        # Also called by firebase-admin's delete_app, on a loop of its own: a second call does nothing.
        if not self._closed:
            self._closed = True
            await self._client.aclose()


def _token_refused(response: httpx.Response) -> bool:
    """A 401 about Herald's access token; not one about the app's APNs credentials, which FCM also answers
    with 401 (THIRD_PARTY_AUTH_ERROR, named in an FcmError detail) and no new token can fix."""
    if response.status_code != 401:
        return False
    try:
        body = json.loads(response.content)
        details = body["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return True
    return not any(isinstance(d, dict) and d.get("@type") == FCM_ERROR_TYPE for d in details or ())
