"""SMS through Twilio's Messages API with the `twilio` SDK's async calls, over a pooled aiohttp session."""

from __future__ import annotations

import base64
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Self
from urllib.parse import urlencode

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from kernel.privacy import scrub
from kernel.settings import Settings
from schemas.notifications import SmsNotification
from schemas.reasons import DeliveryReason

TWILIO_API_URL = "https://api.twilio.com"
# Where the worker's ops endpoint takes Twilio's status callbacks, and the query parameters that join one to
# its notification (Twilio signs the whole URL, so they cannot be altered). No phone number: ids only.
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
NOTIFICATION_ID_PARAM = "nid"
EVENT_ID_PARAM = "eid"
RECIPIENT_PARAM = "uid"
ATTEMPT_PARAM = "attempt"

# Twilio error codes (https://www.twilio.com/docs/api/errors) that no resend can fix, with Herald's reason.
PERMANENT_CODES: dict[int, DeliveryReason] = {
    21211: DeliveryReason.INVALID_NUMBER,
    21408: DeliveryReason.REGION_NOT_ENABLED,
    21610: DeliveryReason.UNSUBSCRIBED,
    21612: DeliveryReason.UNREACHABLE_NUMBER,
    21614: DeliveryReason.NOT_MOBILE,
    21606: DeliveryReason.INVALID_SENDER,
    21659: DeliveryReason.INVALID_SENDER,
    20003: DeliveryReason.PROVIDER_AUTH,
}
RATE_LIMITED_CODES = {20429, 14107}


class AiohttpTwilioClient(AsyncHttpClient):  # type: ignore[misc]  # the SDK ships no types
    """The SDK's async HTTP interface over one aiohttp session of kept-alive connections. Not the SDK's own
    `AsyncTwilioHttpClient`: that passes no timeout to aiohttp (its session default is five minutes) and
    leaves a response unreleased when reading its body fails. Here every request has the timeout and its
    response is released before the call returns; a connection whose request failed or timed out is closed
    by aiohttp, never reused (a reused one could hand the next request the late answer to this one)."""

    def __init__(self, *, timeout: float, connections: int) -> None:
        super().__init__(logger=logging.getLogger("herald.twilio.http"), is_async=True, timeout=timeout)
        self._request_timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None  # opened on first use, on the worker's loop

    async def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's interface, passed on to aiohttp
        allow_redirects: bool = False,
    ) -> Response:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections)
            # No proxy or .netrc from the environment: the base URL is the setting, as with the other SDKs.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        if auth is not None:
            # By hand: aiohttp 3.14 deprecates its BasicAuth, and the helper replacing it is new there.
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        # The form encoded here, as aiohttp's FormData would (the SDK sets its content type): FormData builds
        # a multipart writer and a field list on the way, a fifth of the SDK's cost per send.
        body = None if data is None else urlencode(data, doseq=True).encode()
        async with self._session.request(
            method.upper(),
            uri,
            params=params,  # type: ignore[arg-type]  # the SDK's values are strings and numbers
            data=body,
            headers=headers,
            timeout=self._request_timeout if timeout is None else aiohttp.ClientTimeout(total=timeout),
            allow_redirects=allow_redirects,
        ) as response:
            text = await response.text()
        return Response(response.status, text, response.headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class TwilioSmsSender:
    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        sender: str,
        base_url: str = TWILIO_API_URL,
        public_base_url: str | None = None,
        timeout: float = 10.0,
        connections: int = 16,
    ) -> None:
        # Async through the SDK's own request building and error parsing: in threads over `requests` a send
        # cost about 950 µs of worker CPU and 42% of a delivery worker's busy samples; this way about 170 µs
        # (bench/RESULTS.md, eleventh session). One send is one POST: the client retries nothing, Herald does.
        self._http = AiohttpTwilioClient(timeout=timeout, connections=connections)
        # An empty environment keeps TWILIO_EDGE / TWILIO_REGION from silently rewriting the base URL.
        self._client = Client(account_sid, auth_token, http_client=self._http, environment={})
        self._client.api.base_url = base_url.rstrip("/")
        self._sender = sender
        self._public_base_url = public_base_url

    @classmethod
    def from_settings(cls, settings: Settings, executor: ThreadPoolExecutor) -> Self | None:
        """The sender the settings describe, or None without `HERALD_TWILIO_ACCOUNT_SID` (`Settings` has
        already refused a partial Twilio configuration). (No threads: the calls are asynchronous.)"""
        if settings.twilio_account_sid is None:
            return None
        assert settings.twilio_auth_token is not None and settings.twilio_from is not None
        return cls(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            sender=settings.twilio_from,
            base_url=settings.twilio_base_url,
            public_base_url=settings.public_base_url,
            timeout=settings.twilio_timeout_seconds,
            connections=settings.twilio_connections,
        )

    async def _create(self, message: SmsNotification) -> str | None:
        if self._public_base_url is None:
            created = await self._client.messages.create_async(
                to=message.to, from_=self._sender, body=message.text
            )
        else:
            created = await self._client.messages.create_async(
                to=message.to,
                from_=self._sender,
                body=message.text,
                status_callback=status_callback_url(self._public_base_url, message),
            )
        return str(created.sid) if created.sid else None

    async def send(self, message: SmsNotification) -> str | None:
        try:
            return await self._create(message)
        # Twilio's answers name the number ("The 'To' number +33… is not a valid phone number"): pseudonymized
        except TwilioRestException as exc:
            text = scrub(str(exc.msg), message.to)
            raise _translate(int(exc.status), _int_or_none(exc.code), text) from exc
        except TwilioServiceException as exc:
            text = scrub(f"{exc.title}: {exc.detail}", message.to)
            raise _translate(int(exc.status), _int_or_none(exc.code), text) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetriableDeliveryError(
                f"Twilio unreachable: {type(exc).__name__}: {scrub(str(exc), message.to)}",
                reason=DeliveryReason.PROVIDER_UNAVAILABLE,
            ) from exc

    async def aclose(self) -> None:
        await self._http.close()  # the kept-alive connections


def status_callback_url(public_base_url: str, message: SmsNotification) -> str:
    """The URL Twilio reports this message's delivery to: the notification, event, recipient (a user id, not
    contact data) and attempt, for the status record the callback becomes."""
    query = urlencode(
        {
            NOTIFICATION_ID_PARAM: message.notification_id,
            EVENT_ID_PARAM: message.event_id,
            RECIPIENT_PARAM: message.recipient,
            ATTEMPT_PARAM: message.attempt,
        }
    )
    return f"{public_base_url.rstrip('/')}{STATUS_CALLBACK_PATH}?{query}"


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _translate(
    status: int, code: int | None, message: str
) -> PermanentDeliveryError | RetriableDeliveryError:
    # str() of Twilio's exceptions is coloured for a terminal; build a plain detail instead.
    detail = f"Twilio {status} (code {code}): {message}"
    provider_code = str(code if code is not None else status)
    if code in PERMANENT_CODES:
        return PermanentDeliveryError(detail, reason=PERMANENT_CODES[code], provider_code=provider_code)
    if code in RATE_LIMITED_CODES or status == 429:
        return RetriableDeliveryError(detail, reason=DeliveryReason.RATE_LIMITED, provider_code=provider_code)
    if status >= 500:
        return RetriableDeliveryError(
            detail, reason=DeliveryReason.PROVIDER_UNAVAILABLE, provider_code=provider_code
        )
    if status in (401, 403):
        return PermanentDeliveryError(
            detail, reason=DeliveryReason.PROVIDER_AUTH, provider_code=provider_code
        )
    return PermanentDeliveryError(detail, reason=DeliveryReason.PROVIDER_REFUSED, provider_code=provider_code)
