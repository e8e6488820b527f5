"""Push through Firebase Cloud Messaging (HTTP v1) with firebase-admin, run in a bounded thread pool."""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import firebase_admin
import google.auth.exceptions
from firebase_admin import credentials, exceptions, messaging
from requests.adapters import HTTPAdapter

from adapters.executor import SdkThreads
from adapters.push import PushResult, PushToken, TokenOutcome
from adapters.retry_after import parse_retry_after
from kernel.errors import ConfigurationError, DeliveryError, PermanentDeliveryError, RetriableDeliveryError
from kernel.privacy import scrub
from kernel.settings import Settings
from schemas.events import Priority
from schemas.notifications import PushNotification
from schemas.reasons import DeliveryReason
from schemas.users import TokenKind

FCM_API_URL = "https://fcm.googleapis.com"
NOTIFICATION_ID_KEY = "herald_notification_id"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

# FCM error codes (FcmError details, else the canonical status) → (retriable, Herald reason).
ERROR_CODES: dict[str, tuple[bool, DeliveryReason]] = {
    "UNREGISTERED": (False, DeliveryReason.UNREGISTERED),
    "INVALID_ARGUMENT": (False, DeliveryReason.INVALID_REQUEST),
    "SENDER_ID_MISMATCH": (False, DeliveryReason.SENDER_ID_MISMATCH),
    "THIRD_PARTY_AUTH_ERROR": (False, DeliveryReason.PROVIDER_AUTH),
    "APNS_AUTH_ERROR": (False, DeliveryReason.PROVIDER_AUTH),
    "UNAUTHENTICATED": (False, DeliveryReason.PROVIDER_AUTH),
    "PERMISSION_DENIED": (False, DeliveryReason.PROVIDER_AUTH),
    "QUOTA_EXCEEDED": (True, DeliveryReason.RATE_LIMITED),
    "RESOURCE_EXHAUSTED": (True, DeliveryReason.RATE_LIMITED),
    "UNAVAILABLE": (True, DeliveryReason.PROVIDER_UNAVAILABLE),
    "INTERNAL": (True, DeliveryReason.PROVIDER_UNAVAILABLE),
    "DEADLINE_EXCEEDED": (True, DeliveryReason.PROVIDER_UNAVAILABLE),
    "UNKNOWN": (True, DeliveryReason.PROVIDER_UNAVAILABLE),
}
INVALID_TOKEN_CODES = {"UNREGISTERED"}


class FcmPushSender:
    name = "fcm"
    kinds = frozenset({TokenKind.FCM_FID, TokenKind.FCM_TOKEN})

    def __init__(
        self,
        service_account: Mapping[str, Any],
        *,
        base_url: str = FCM_API_URL,
        project_id: str | None = None,
        timeout: float = 10.0,
        executor: ThreadPoolExecutor | None = None,
        max_workers: int = 4,
        max_tokens_per_call: int = 100,
    ) -> None:
        project = project_id or str(service_account["project_id"])
        # A named app per adapter: no global default app, and two senders never share credentials.
        self._app = firebase_admin.initialize_app(
            credentials.Certificate(dict(service_account)),
            options={"projectId": project, "httpTimeout": timeout},
            name=f"herald-fcm-{uuid.uuid4().hex[:12]}",
        )
        # firebase-admin has no public setting for the endpoint or its retries; the messaging service holds
        # both (FIELD-NOTES: the send URL is formed from FCM_URL and the project id).
        service: Any = messaging._get_messaging_service(self._app)
        if not hasattr(service, "_fcm_url") or not hasattr(service, "_client"):
            # Fail at start-up, not by pushing to Google from a test or staging set-up.
            raise RuntimeError("this firebase-admin version no longer exposes the FCM send URL; pin <8")
        root = base_url.rstrip("/")
        service._fcm_url = f"{root}/v1/projects/{project}/messages:send"
        # The SDK mounts adapters that retry POSTs on 500/503 and on read errors, so one send could reach
        # the device twice. Herald owns retries: the most specific mount wins, and this one never retries.
        service._client.session.mount(
            f"{root}/", HTTPAdapter(pool_maxsize=max_tokens_per_call, max_retries=0)
        )
        # send_each starts one SDK thread per message, so a call is capped at this many tokens.
        self._max_tokens_per_call = max_tokens_per_call
        self._threads = SdkThreads(executor, max_workers=max_workers, name="herald-fcm")

    @classmethod
    def from_settings(cls, settings: Settings, executor: ThreadPoolExecutor) -> Self | None:
        """The sender the settings describe, or None without `HERALD_FCM_SERVICE_ACCOUNT_FILE`."""
        if settings.fcm_service_account_file is None:
            return None
        try:
            account = json.loads(settings.fcm_service_account_file.read_text(encoding="utf-8"))
            return cls(
                account,
                base_url=settings.fcm_base_url,
                project_id=settings.fcm_project_id,
                timeout=settings.fcm_timeout_seconds,
                executor=executor,
                max_tokens_per_call=settings.fcm_max_tokens_per_call,
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigurationError(
                f"HERALD_FCM_SERVICE_ACCOUNT_FILE: not a usable service-account key: {type(exc).__name__}"
            ) from None

    async def send(self, message: PushNotification, tokens: Sequence[PushToken]) -> PushResult:
        outcomes: dict[int, TokenOutcome] = {}
        sendable: list[tuple[int, messaging.Message]] = []
        for index, token in enumerate(tokens):
            built = _build(message, token)
            if isinstance(built, DeliveryError):
                outcomes[index] = TokenOutcome(token, error=built)
            else:
                sendable.append((index, built))
        step = self._max_tokens_per_call
        for start in range(0, len(sendable), step):
            chunk = sendable[start : start + step]
            batch = await self._send_each([built for _, built in chunk])
            for (index, _), response in zip(chunk, batch.responses, strict=True):
                outcomes[index] = _outcome(tokens[index], response)
        return PushResult(tuple(outcomes[index] for index in range(len(tokens))))

    async def _send_each(self, messages: list[messaging.Message]) -> messaging.BatchResponse:
        try:
            return await self._threads.run(lambda: messaging.send_each(messages, app=self._app))
        except exceptions.FirebaseError as exc:
            raise _batch_error(exc) from exc
        except google.auth.exceptions.GoogleAuthError as exc:
            raise _auth_error(exc) from exc

    async def aclose(self) -> None:
        # delete_app closes the SDK's async client with asyncio.run, which cannot run on a running loop.
        await self._threads.run(lambda: firebase_admin.delete_app(self._app))
        self._threads.shutdown()


def _build(message: PushNotification, token: PushToken) -> messaging.Message | DeliveryError:
    urgent = message.priority is Priority.HIGH
    fields: dict[str, Any] = {
        "notification": messaging.Notification(title=message.title, body=message.body),
        # The id rides along in the data payload so the app (and a resend) can recognise the notification.
        "data": {**message.data, NOTIFICATION_ID_KEY: message.notification_id},
        "android": messaging.AndroidConfig(priority="high" if urgent else "normal"),
    }
    if token.kind is TokenKind.FCM_FID:
        return messaging.Message(fid=token.value, **fields)
    if token.kind is TokenKind.FCM_TOKEN:
        # Registration tokens are still what most apps hold and FCM v1 still accepts them as `token`, but
        # firebase-admin 7.7 warns on every use; ignore that one warning here, as the SDK itself does for
        # MulticastMessage.tokens. (catch_warnings swaps process-wide filters: keep the block this small.)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Message.token is deprecated", DeprecationWarning)
            return messaging.Message(token=token.value, **fields)
    return PermanentDeliveryError(
        f"FCM cannot deliver to a {token.kind.value} token", reason=DeliveryReason.UNSUPPORTED_TOKEN
    )


def _outcome(token: PushToken, response: messaging.SendResponse) -> TokenOutcome:
    if response.success:
        return TokenOutcome(token, message_id=str(response.message_id))
    exc = response.exception
    code = _fcm_code(exc)
    error = _translate(exc, code, token.value)
    return TokenOutcome(token, error=error, token_invalid=code in INVALID_TOKEN_CODES)


def _fcm_code(exc: exceptions.FirebaseError) -> str:
    """The FcmError code from the response details, else the canonical error code (e.g. UNAVAILABLE)."""
    response = exc.http_response
    if response is not None:
        try:
            body = json.loads(response.content)
        except (ValueError, TypeError):
            body = None
        if isinstance(body, dict):
            for detail in body.get("error", {}).get("details", []):
                if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
                    return str(detail.get("errorCode"))
    return str(exc.code)


def _translate(
    exc: exceptions.FirebaseError, code: str, token: str | None = None
) -> PermanentDeliveryError | RetriableDeliveryError:
    # A device token is profile data; should FCM's message quote it, only its pseudonym is kept.
    detail = f"FCM {code}: {scrub(str(exc), token)}"
    retriable, reason = ERROR_CODES.get(code, (False, DeliveryReason.PROVIDER_REFUSED))
    if not retriable:
        return PermanentDeliveryError(detail, reason=reason, provider_code=code)
    response = exc.http_response
    retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
    return RetriableDeliveryError(detail, reason=reason, provider_code=code, retry_after=retry_after)


def _batch_error(exc: exceptions.FirebaseError) -> PermanentDeliveryError | RetriableDeliveryError:
    # send_each reports per-message errors in its result; a raised error means the call itself failed,
    # most often because no access token could be had from the token endpoint.
    if isinstance(exc.cause, google.auth.exceptions.GoogleAuthError):
        return _auth_error(exc.cause)
    return _translate(exc, str(exc.code))


def _auth_error(
    exc: google.auth.exceptions.GoogleAuthError,
) -> PermanentDeliveryError | RetriableDeliveryError:
    detail = f"FCM credentials refused or unreachable: {type(exc).__name__}: {exc}"
    # TransportError: the token endpoint could not be reached; RefreshError says itself if a retry may help.
    if isinstance(exc, google.auth.exceptions.TransportError) or getattr(exc, "retryable", False):
        return RetriableDeliveryError(
            detail, reason=DeliveryReason.PROVIDER_UNAVAILABLE, provider_code="oauth"
        )
    return PermanentDeliveryError(detail, reason=DeliveryReason.PROVIDER_AUTH, provider_code="oauth")
