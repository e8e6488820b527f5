"""Push straight to Apple (APNs) over HTTP/2 with httpx, authenticated by a provider JWT from a .p8 key."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from adapters.push import PushResult, PushToken, TokenOutcome
from adapters.retry_after import parse_retry_after
from kernel.errors import ConfigurationError, DeliveryError, PermanentDeliveryError, RetriableDeliveryError
from kernel.privacy import scrub
from kernel.settings import Settings
from schemas.events import Priority
from schemas.notifications import PushNotification
from schemas.reasons import DeliveryReason
from schemas.users import TokenKind

APNS_PRODUCTION_URL = "https://api.push.apple.com"
APNS_SANDBOX_URL = "https://api.sandbox.push.apple.com"
NOTIFICATION_ID_KEY = "herald_notification_id"  # the same key FCM uses, so an app reads one field
# apns-id = uuid5(namespace, notification id + token): stable across retries, so Apple can recognise a resend.
APNS_ID_NAMESPACE = uuid.UUID("6f2c5f4e-3d0a-5b7e-9a51-8d1e4c2b7f30")

# Apple refuses provider tokens issued over an hour ago, and renewals more often than every 20 minutes.
TOKEN_MAX_AGE_SECONDS = 3600.0
TOKEN_MIN_RENEWAL_SECONDS = 1200.0

# APNs `reason` → (retriable, Herald reason). Any other status ≥ 500 is retriable, any other 4xx permanent.
ERROR_REASONS: dict[str, tuple[bool, DeliveryReason]] = {
    "Unregistered": (False, DeliveryReason.UNREGISTERED),
    "BadDeviceToken": (False, DeliveryReason.INVALID_TOKEN),
    "DeviceTokenNotForTopic": (False, DeliveryReason.TOKEN_NOT_FOR_TOPIC),
    "PayloadTooLarge": (False, DeliveryReason.PAYLOAD_TOO_LARGE),
    "InvalidProviderToken": (False, DeliveryReason.PROVIDER_AUTH),
    "ExpiredProviderToken": (False, DeliveryReason.PROVIDER_AUTH),
    "MissingProviderToken": (False, DeliveryReason.PROVIDER_AUTH),
    "Forbidden": (False, DeliveryReason.PROVIDER_AUTH),
    "BadTopic": (False, DeliveryReason.PROVIDER_MISCONFIGURED),
    "MissingTopic": (False, DeliveryReason.PROVIDER_MISCONFIGURED),
    "TopicDisallowed": (False, DeliveryReason.PROVIDER_MISCONFIGURED),
    "BadPath": (False, DeliveryReason.PROVIDER_MISCONFIGURED),
    "TooManyRequests": (True, DeliveryReason.RATE_LIMITED),
    "TooManyProviderTokenUpdates": (True, DeliveryReason.RATE_LIMITED),
    "InternalServerError": (True, DeliveryReason.PROVIDER_UNAVAILABLE),
    "ServiceUnavailable": (True, DeliveryReason.PROVIDER_UNAVAILABLE),
    "Shutdown": (True, DeliveryReason.PROVIDER_UNAVAILABLE),
}
INVALID_TOKEN_REASONS = {"Unregistered", "BadDeviceToken"}
AUTH_REFUSALS = {"InvalidProviderToken", "ExpiredProviderToken"}


def apns_id(notification_id: str, token: str) -> str:
    """The apns-id for one notification to one device: the same on every retry of it."""
    return str(uuid.uuid5(APNS_ID_NAMESPACE, f"{notification_id}\x1f{token}"))


class ProviderToken:
    """The provider JWT (ES256, `kid` = key id, `iss` = team id), reused until `renew_after` seconds old.

    A refused token is renewed only if it is old enough that Apple will take a new one (20 minutes)."""

    def __init__(
        self,
        private_key: str | bytes,
        *,
        key_id: str,
        team_id: str,
        renew_after: float,
        clock: Callable[[], float],
    ) -> None:
        if not TOKEN_MIN_RENEWAL_SECONDS <= renew_after < TOKEN_MAX_AGE_SECONDS:
            raise ValueError("the provider token must be renewed after 20 to 60 minutes")
        pem = private_key.encode() if isinstance(private_key, str) else private_key
        key = load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("an APNs auth key (.p8) is an EC P-256 private key")
        self._key = key
        self._key_id = key_id
        self._team_id = team_id
        self._renew_after = renew_after
        self._clock = clock
        self._token: str | None = None
        self._issued_at = 0.0
        self.issued = 0  # how many tokens were signed (a cheap check that they are reused)

    def current(self) -> str:
        now = self._clock()
        if self._token is None or now - self._issued_at >= self._renew_after:
            return self._issue(now)
        return self._token

    def renewed_after_refusal(self, refused: str) -> str | None:
        """The token to retry with once, or None when a new one cannot help yet."""
        if self._token is not None and self._token != refused:
            return self._token  # renewed meanwhile (another request saw the same refusal)
        now = self._clock()
        if now - self._issued_at < TOKEN_MIN_RENEWAL_SECONDS:
            return None  # Apple would refuse the renewal; a young token is refused for its key or clock
        return self._issue(now)

    def _issue(self, now: float) -> str:
        self._token = jwt.encode(
            {"iss": self._team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self._key_id},
        )
        self._issued_at = now
        self.issued += 1
        return self._token


class ApnsPushSender:
    name = "apns"
    kinds = frozenset({TokenKind.APNS})  # the device tokens it can address

    def __init__(
        self,
        private_key: str | bytes,
        *,
        key_id: str,
        team_id: str,
        topic: str,
        base_url: str = APNS_PRODUCTION_URL,
        timeout: float = 10.0,
        max_concurrency: int = 20,
        time_to_live: float = 86400.0,
        token_renew_after: float = 3000.0,
        ca_file: str | Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ca_file is not None and ssl_context is not None:
            raise ValueError("pass a CA file or an SSL context, not both")
        if ca_file is not None:
            ssl_context = ssl.create_default_context(cafile=str(ca_file))
        self._provider_token = ProviderToken(
            private_key, key_id=key_id, team_id=team_id, renew_after=token_renew_after, clock=clock
        )
        self._topic = topic
        self._time_to_live = time_to_live
        self._clock = clock
        self._slots = asyncio.Semaphore(max_concurrency)
        # APNs speaks only HTTP/2 (http1=False: never fall back); requests share one multiplexed connection.
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            http1=False,
            http2=True,
            timeout=httpx.Timeout(timeout),
            verify=ssl_context if ssl_context is not None else True,
        )

    @classmethod
    def from_settings(cls, settings: Settings, executor: ThreadPoolExecutor) -> Self | None:
        """The sender the settings describe, or None without `HERALD_APNS_KEY_FILE` (`Settings` has already
        refused a partial APNs configuration). httpx is asynchronous: the threads are not needed."""
        if settings.apns_key_file is None:
            return None
        assert settings.apns_key_id and settings.apns_team_id and settings.apns_topic
        try:
            return cls(
                settings.apns_key_file.read_bytes(),
                key_id=settings.apns_key_id,
                team_id=settings.apns_team_id,
                topic=settings.apns_topic,
                base_url=settings.apns_base_url,
                timeout=settings.apns_timeout_seconds,
                max_concurrency=settings.apns_max_concurrency,
                time_to_live=settings.apns_time_to_live_seconds,
                token_renew_after=settings.apns_token_renew_seconds,
                ca_file=settings.apns_ca_file,
            )
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"HERALD_APNS_KEY_FILE / HERALD_APNS_CA_FILE: not usable: {type(exc).__name__}"
            ) from None

    @property
    def provider_tokens_issued(self) -> int:
        return self._provider_token.issued

    async def send(self, message: PushNotification, tokens: Sequence[PushToken]) -> PushResult:
        outcomes = tuple(await asyncio.gather(*(self._send_one(message, token) for token in tokens)))
        errors = [outcome.error for outcome in outcomes if outcome.error is not None]
        if outcomes and len(errors) == len(outcomes) and all(_call_wide(error) for error in errors):
            # Every device failed for the same reason as the connection or the key: the call itself failed.
            raise errors[0]
        return PushResult(outcomes)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send_one(self, message: PushNotification, token: PushToken) -> TokenOutcome:
        if token.kind is not TokenKind.APNS:
            error = PermanentDeliveryError(
                f"APNs cannot deliver to a {token.kind.value} token", reason=DeliveryReason.UNSUPPORTED_TOKEN
            )
            return TokenOutcome(token, error=error)
        headers = self._headers(message, token)
        body = _payload(message)
        async with self._slots:
            provider_token = self._provider_token.current()
            response = await self._post(token, headers, body, provider_token)
            if isinstance(response, httpx.Response) and _refused_reason(response) in AUTH_REFUSALS:
                # The one retry Herald allows itself here: the same request with a renewed provider token.
                renewed = self._provider_token.renewed_after_refusal(provider_token)
                if renewed is not None:
                    response = await self._post(token, headers, body, renewed)
        if isinstance(response, DeliveryError):
            return TokenOutcome(token, error=response)
        if response.status_code == 200:
            return TokenOutcome(token, message_id=response.headers.get("apns-id") or headers["apns-id"])
        reason = _refused_reason(response)
        return TokenOutcome(
            token, error=_translate(response, reason), token_invalid=reason in INVALID_TOKEN_REASONS
        )

    def _headers(self, message: PushNotification, token: PushToken) -> dict[str, str]:
        # Counted from creation, so a retry expires when the first attempt would have; 0 = now or never.
        expires = int(message.created_at.timestamp() + self._time_to_live)
        return {
            "apns-topic": self._topic,
            "apns-push-type": "alert",
            "apns-priority": "10" if message.priority is Priority.HIGH else "5",
            "apns-expiration": str(expires if expires > self._clock() else 0),
            "apns-id": apns_id(message.notification_id, token.value),
            "content-type": "application/json",
        }

    async def _post(
        self, token: PushToken, headers: dict[str, str], body: bytes, provider_token: str
    ) -> httpx.Response | DeliveryError:
        try:
            return await self._client.post(
                # Quoted: a token is profile data, and must not reach another path with Herald's JWT.
                f"/3/device/{quote(token.value, safe='')}",
                content=body,
                headers={**headers, "authorization": f"bearer {provider_token}"},
            )
        except httpx.TransportError as exc:
            return _transport_error(exc, token.value)


def _payload(message: PushNotification) -> bytes:
    aps = {"alert": {"title": message.title, "body": message.body}}
    # `aps` last: a data key of that name must not replace the alert.
    payload = {**message.data, NOTIFICATION_ID_KEY: message.notification_id, "aps": aps}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body: Any = json.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _refused_reason(response: httpx.Response) -> str:
    """APNs' `reason` from an error body, else the HTTP status as text ("" for a success)."""
    if response.status_code == 200:
        return ""
    reason = _error_body(response).get("reason")
    return reason if isinstance(reason, str) else str(response.status_code)


def _translate(response: httpx.Response, reason: str) -> PermanentDeliveryError | RetriableDeliveryError:
    status = response.status_code
    detail = f"APNs {status} {reason}"
    timestamp = _error_body(response).get("timestamp")
    if timestamp is not None:
        # A 410 says since when the token is invalid (ms since the epoch).
        detail += f" (invalid since {timestamp})"
    known = ERROR_REASONS.get(reason)
    if known is not None:
        retriable, herald_reason = known
    elif status == 429:
        retriable, herald_reason = True, DeliveryReason.RATE_LIMITED
    elif status >= 500:
        retriable, herald_reason = True, DeliveryReason.PROVIDER_UNAVAILABLE
    elif status in (401, 403):
        retriable, herald_reason = False, DeliveryReason.PROVIDER_AUTH
    else:
        retriable, herald_reason = False, DeliveryReason.INVALID_REQUEST
    if not retriable:
        return PermanentDeliveryError(detail, reason=herald_reason, provider_code=reason)
    return RetriableDeliveryError(
        detail,
        reason=herald_reason,
        provider_code=reason,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def _transport_error(exc: httpx.TransportError, token: str) -> RetriableDeliveryError:
    # The request's path holds the device token, which an error's message may quote: pseudonymized.
    text = scrub(str(exc), token)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        detail, code = f"APNs unreachable: {type(exc).__name__}: {text}", "connect"
    elif isinstance(exc, httpx.TimeoutException):
        detail, code = f"APNs did not answer in time: {type(exc).__name__}", "timeout"
    else:
        detail, code = f"APNs connection failed: {type(exc).__name__}: {text}", "transport"
    error = RetriableDeliveryError(detail, reason=DeliveryReason.PROVIDER_UNAVAILABLE, provider_code=code)
    error.__cause__ = exc
    return error


def _call_wide(error: DeliveryError) -> bool:
    """Whether this failure is the provider's (its key, or no connection), not one device's."""
    return error.reason == DeliveryReason.PROVIDER_AUTH or error.provider_code == "connect"
