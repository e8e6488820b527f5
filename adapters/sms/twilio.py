"""SMS through Twilio's Messages API with the `twilio` SDK's asynchronous calls, sent through Herald's own
aiohttp client (`twilio_transport`) over kept-alive connections, as many as the requests in flight."""

from __future__ import annotations

import asyncio
from typing import Self

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.rest import Client

from adapters.sms.twilio_transport import TwilioHttp
from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from kernel.privacy import scrub
from kernel.settings import Settings
from schemas.notifications import SmsNotification
from schemas.reasons import DeliveryReason

TWILIO_API_URL = "https://api.twilio.com"

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


class TwilioSmsSender:
    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        sender: str,
        base_url: str = TWILIO_API_URL,
        timeout: float = 10.0,
        max_concurrency: int = 32,
    ) -> None:
        # One send is one POST (Herald retries), with the timeout as its deadline.
        self._http = TwilioHttp(timeout=timeout, max_connections=max_concurrency)
        # An empty environment keeps TWILIO_EDGE / TWILIO_REGION from silently rewriting the base URL.
        self._client = Client(account_sid, auth_token, http_client=self._http, environment={})
        self._client.api.base_url = base_url.rstrip("/")
        self._sender = sender
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_concurrency)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:
        """The sender the settings describe, or None without `HERALD_TWILIO_ACCOUNT_SID` (`Settings` has
        already refused a partial Twilio configuration)."""
        if settings.twilio_account_sid is None:
            return None
        assert settings.twilio_auth_token is not None and settings.twilio_from is not None
        return cls(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            sender=settings.twilio_from,
            base_url=settings.twilio_base_url,
            timeout=settings.twilio_timeout_seconds,
            max_concurrency=settings.twilio_max_concurrency,
        )

    async def send(self, message: SmsNotification) -> str | None:
        try:
            async with self._slots:
                created = await self._client.messages.create_async(
                    to=message.to, from_=self._sender, body=message.text
                )
        # Twilio's answers name the number ("The 'To' number +33… is not a valid phone number"): pseudonymized
        except TwilioRestException as exc:
            text = scrub(str(exc.msg), message.to)
            raise _translate(int(exc.status), _int_or_none(exc.code), text) from exc
        except TwilioServiceException as exc:
            text = scrub(f"{exc.title}: {exc.detail}", message.to)
            raise _translate(int(exc.status), _int_or_none(exc.code), text) from exc
        except TimeoutError as exc:
            raise RetriableDeliveryError(
                f"Twilio did not answer within {self._timeout:g} s",
                reason=DeliveryReason.PROVIDER_UNAVAILABLE,
            ) from exc
        except aiohttp.ClientError as exc:
            raise RetriableDeliveryError(
                f"Twilio unreachable: {type(exc).__name__}: {scrub(str(exc), message.to)}",
                reason=DeliveryReason.PROVIDER_UNAVAILABLE,
            ) from exc
        return str(created.sid) if created.sid else None

    async def aclose(self) -> None:
        await self._http.close()  # the kept-alive connections


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
