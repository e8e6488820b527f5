"""SMS through Twilio's Messages API with the `twilio` SDK, run in a bounded thread pool."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Self
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from adapters.executor import SdkThreads
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
        executor: ThreadPoolExecutor | None = None,
        max_workers: int = 8,
    ) -> None:
        # No `max_retries`: the SDK then mounts no retrying adapter, so one send is one POST (Herald retries).
        http_client = TwilioHttpClient(timeout=timeout)
        # One kept-alive connection per thread that may call at once: the SDK's pool (6 on 2 cores, 10 for
        # http://) is smaller, and every call beyond it opened and then discarded a connection.
        assert http_client.session is not None
        self._session = http_client.session
        for scheme in ("https://", "http://"):
            self._session.mount(scheme, HTTPAdapter(pool_maxsize=max_workers))
        # An empty environment keeps TWILIO_EDGE / TWILIO_REGION from silently rewriting the base URL.
        self._client = Client(account_sid, auth_token, http_client=http_client, environment={})
        self._client.api.base_url = base_url.rstrip("/")
        self._sender = sender
        self._public_base_url = public_base_url
        self._threads = SdkThreads(executor, max_workers=max_workers, name="herald-twilio")

    @classmethod
    def from_settings(cls, settings: Settings, executor: ThreadPoolExecutor) -> Self | None:
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
            public_base_url=settings.public_base_url,
            timeout=settings.twilio_timeout_seconds,
            executor=executor,
            # A kept-alive connection for every thread of the shared pool that may call at once.
            max_workers=settings.provider_threads,
        )

    def _create(self, message: SmsNotification) -> str | None:
        if self._public_base_url is None:
            created = self._client.messages.create(to=message.to, from_=self._sender, body=message.text)
        else:
            created = self._client.messages.create(
                to=message.to,
                from_=self._sender,
                body=message.text,
                status_callback=status_callback_url(self._public_base_url, message),
            )
        return str(created.sid) if created.sid else None

    async def send(self, message: SmsNotification) -> str | None:
        try:
            return await self._threads.run(lambda: self._create(message))
        # Twilio's answers name the number ("The 'To' number +33… is not a valid phone number"): pseudonymized
        except TwilioRestException as exc:
            text = scrub(str(exc.msg), message.to)
            raise _translate(int(exc.status), _int_or_none(exc.code), text) from exc
        except TwilioServiceException as exc:
            text = scrub(f"{exc.title}: {exc.detail}", message.to)
            raise _translate(int(exc.status), _int_or_none(exc.code), text) from exc
        except requests.RequestException as exc:
            raise RetriableDeliveryError(
                f"Twilio unreachable: {type(exc).__name__}: {scrub(str(exc), message.to)}",
                reason=DeliveryReason.PROVIDER_UNAVAILABLE,
            ) from exc

    async def aclose(self) -> None:
        self._session.close()  # the kept-alive connections
        self._threads.shutdown()


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
