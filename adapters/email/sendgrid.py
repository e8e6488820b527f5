"""Email through SendGrid's v3 Mail Send API with the `sendgrid` SDK, run in a bounded thread pool."""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from python_http_client import exceptions as sg_errors
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Header, Mail

from adapters.executor import SdkThreads
from adapters.retry_after import parse_retry_after
from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from kernel.privacy import scrub
from kernel.settings import Settings
from schemas.notifications import EmailNotification
from schemas.reasons import DeliveryReason

SENDGRID_API_URL = "https://api.sendgrid.com"
# The custom arg Herald's mails carry (SendGrid echoes custom args as top-level event fields): the only way a
# webhook event tells whose address it is, since the address alone may belong to several users.
RECIPIENT_ARG = "herald_recipient"
NOTIFICATION_ID_ARG = "herald_notification_id"
# With these two, an event joins its notification's status records (delivery receipts).
EVENT_ID_ARG = "herald_event_id"
ATTEMPT_ARG = "herald_attempt"  # a string, as every custom arg
NOTIFICATION_ID_HEADER = "X-Herald-Notification-Id"

# SendGrid statuses that a resend of the same request can never turn into a 202.
_PERMANENT: dict[int, DeliveryReason] = {
    400: DeliveryReason.INVALID_REQUEST,
    401: DeliveryReason.PROVIDER_AUTH,
    403: DeliveryReason.PROVIDER_AUTH,
    413: DeliveryReason.PAYLOAD_TOO_LARGE,
}


class SendGridEmailSender:
    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        *,
        sender: str,
        base_url: str = SENDGRID_API_URL,
        timeout: float = 10.0,
        executor: ThreadPoolExecutor | None = None,
        max_workers: int = 8,
    ) -> None:
        self._client = SendGridAPIClient(api_key=api_key, host=base_url.rstrip("/"))
        self._sender = sender
        self._timeout = timeout
        self._threads = SdkThreads(executor, max_workers=max_workers, name="herald-sendgrid")

    @classmethod
    def from_settings(cls, settings: Settings, executor: ThreadPoolExecutor) -> Self | None:
        """The sender the settings describe, or None without `HERALD_SENDGRID_API_KEY`."""
        if settings.sendgrid_api_key is None:
            return None
        return cls(
            settings.sendgrid_api_key.get_secret_value(),
            sender=settings.email_from,
            base_url=settings.sendgrid_base_url,
            timeout=settings.sendgrid_timeout_seconds,
            executor=executor,
        )

    def _compose(self, message: EmailNotification) -> dict[str, Any]:
        mail = Mail(
            from_email=self._sender,
            to_emails=message.to,
            subject=message.subject,
            plain_text_content=message.text,
            html_content=message.html,
        )
        # The notification id travels as a custom arg (echoed in SendGrid's event webhook) and as a header
        # (visible in the delivered mail), so a resend after a crash can be traced to the same notification.
        mail.custom_arg = CustomArg(NOTIFICATION_ID_ARG, message.notification_id)
        mail.custom_arg = CustomArg(RECIPIENT_ARG, message.recipient)
        mail.custom_arg = CustomArg(EVENT_ID_ARG, message.event_id)
        mail.custom_arg = CustomArg(ATTEMPT_ARG, str(message.attempt))
        mail.header = Header(NOTIFICATION_ID_HEADER, message.notification_id)
        body: dict[str, Any] = mail.get()
        return body

    def _post(self, body: dict[str, Any]) -> str | None:
        response = self._client.client.mail.send.post(request_body=body, timeout=self._timeout)
        message_id = response.headers.get("X-Message-Id")
        return str(message_id) if message_id else None

    async def send(self, message: EmailNotification) -> str | None:
        body = self._compose(message)
        try:
            return await self._threads.run(lambda: self._post(body))
        except sg_errors.HTTPError as exc:
            raise _translate(exc, message.to) from exc
        except (OSError, http.client.HTTPException) as exc:
            # URLError, refused connections and socket timeouts are all OSErrors.
            raise RetriableDeliveryError(
                f"SendGrid unreachable: {type(exc).__name__}: {scrub(str(exc), message.to)}",
                reason=DeliveryReason.PROVIDER_UNAVAILABLE,
            ) from exc

    async def aclose(self) -> None:
        # The SDK opens a urllib connection per request and keeps none: only the threads are left to release.
        self._threads.shutdown()


def _translate(exc: sg_errors.HTTPError, to: str) -> PermanentDeliveryError | RetriableDeliveryError:
    status = int(exc.status_code)
    # SendGrid's message may quote the address it refused: pseudonymized.
    detail = f"SendGrid {status}: {scrub(_first_error(exc), to)}"
    if status in _PERMANENT:
        return PermanentDeliveryError(detail, reason=_PERMANENT[status], provider_code=str(status))
    if status == 429:
        retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        return RetriableDeliveryError(
            detail, reason=DeliveryReason.RATE_LIMITED, provider_code="429", retry_after=retry_after
        )
    if status >= 500:
        return RetriableDeliveryError(
            detail, reason=DeliveryReason.PROVIDER_UNAVAILABLE, provider_code=str(status)
        )
    # Other 4xx (404, 405, 415) mean the request or configuration is wrong, not that SendGrid is busy.
    return PermanentDeliveryError(detail, reason=DeliveryReason.PROVIDER_REFUSED, provider_code=str(status))


def _first_error(exc: sg_errors.HTTPError) -> str:
    try:
        errors = exc.to_dict.get("errors") or []
        return str(errors[0].get("message", "")) if errors else ""
    except (ValueError, AttributeError, TypeError):
        return ""
