"""SendGrid's signed Event Webhook: a hard bounce or a bounced-address drop removes the address from the
recipient's profile, through the users topic like any other profile change; with receipts on, each event also
becomes a status record (streams/ops/receipts.py)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.email.sendgrid import RECIPIENT_ARG
from kernel.errors import WebhookRefused
from schemas.status import DeliveryStatus
from schemas.users import Email, ProfileUpdate
from schemas.webhooks import BounceEvent, BounceOutcome, ReceiptOutcome, WebhookOutcome, WebhookRefusal
from streams.ops.receipts import Claim, ReceiptMetrics, Receipts, sendgrid_status
from streams.ops.replay_guard import ReplayGuard, ReplayMemoryFull
from streams.ops.request_body import read_body

log = logging.getLogger("herald.bounces")

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
DEFAULT_PATH = "/webhooks/sendgrid"
DEFAULT_TOLERANCE_SECONDS = 600.0
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_PUBLISH_TIMEOUT_SECONDS = 10.0

_TIMESTAMP = re.compile(r"[0-9]{1,12}")

PublishUpdate = Callable[[ProfileUpdate], Awaitable[None]]
Clock = Callable[[], datetime]


class EmailRemoval(ProfileUpdate):
    """`email: null` with a precondition: the directory clears the address only if it is still `if_email`,
    so a late bounce never removes an address the user has changed since."""

    if_email: Email


@dataclass(frozen=True)
class Bounce:
    event: BounceEvent
    removal: EmailRemoval


# Every value each bounded label takes: docs/METRICS.md lists them, and a test keeps the two equal.
LABEL_VALUES: Final[dict[tuple[str, str], frozenset[str]]] = {
    ("herald_webhook_requests_total", "outcome"): frozenset(WebhookOutcome),
    ("herald_webhook_refused_total", "reason"): frozenset(WebhookRefusal),
    ("herald_email_bounces_total", "event"): frozenset(BounceEvent),
    ("herald_email_bounces_total", "outcome"): frozenset(BounceOutcome),
    ("herald_delivery_receipts_total", "outcome"): frozenset(ReceiptOutcome),
}


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "herald_webhook_requests_total",
            "Provider webhook requests, by provider and outcome (accepted, refused, unavailable)",
            ["provider", "outcome"],
            registry=registry,
        )
        self.refused = Counter(
            "herald_webhook_refused_total",
            "Provider webhook requests refused, by provider and reason",
            ["provider", "reason"],
            registry=registry,
        )
        self.bounces = Counter(
            "herald_email_bounces_total",
            "Hard bounces and bounced-address drops reported by the provider, by event and outcome "
            "(removal_requested, unattributed)",
            ["provider", "event", "outcome"],
            registry=registry,
        )
        self.receipts = Counter(
            "herald_delivery_receipts_total",
            "Delivery receipts (status callbacks, email events) by provider and outcome (recorded, ignored, "
            "superseded, unattributed)",
            ["provider", "outcome"],
            registry=registry,
        )


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER) or as PEM; it must be a P-256 key."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        raise ValueError("not a public key in base64 DER or PEM form") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key (SendGrid signs with P-256)")
    return key


@dataclass(frozen=True)
class SignatureHeaders:
    der: bytes
    timestamp: str


def signature_headers(signature: str | None, timestamp: str | None) -> SignatureHeaders:
    """The signature and timestamp headers, present and well formed, or WebhookRefused: checked before a byte
    of the body is read."""
    if not signature or not signature.strip():
        raise WebhookRefused(WebhookRefusal.MISSING_SIGNATURE)
    if not timestamp or not timestamp.strip():
        raise WebhookRefused(WebhookRefusal.MISSING_TIMESTAMP)
    timestamp = timestamp.strip()
    if _TIMESTAMP.fullmatch(timestamp) is None:
        raise WebhookRefused(WebhookRefusal.MALFORMED_TIMESTAMP)
    try:
        der = base64.b64decode(signature.strip(), validate=True)
    except binascii.Error:
        raise WebhookRefused(WebhookRefusal.MALFORMED_SIGNATURE) from None
    return SignatureHeaders(der, timestamp)


def verify_request(
    key: ec.EllipticCurvePublicKey,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    now: datetime,
    tolerance_seconds: float,
) -> None:
    """Raise WebhookRefused unless `signature` is SendGrid's over `timestamp + body` and the timestamp is
    within `tolerance_seconds` of `now`."""
    headers = signature_headers(signature, timestamp)
    verify_signed(key, body, headers, now=now, tolerance_seconds=tolerance_seconds)


def verify_signed(
    key: ec.EllipticCurvePublicKey,
    body: bytes,
    headers: SignatureHeaders,
    *,
    now: datetime,
    tolerance_seconds: float,
) -> None:
    """`verify_request`, for headers already checked by `signature_headers`."""
    der, timestamp = headers.der, headers.timestamp
    try:
        # The signed content is exactly what SendGrid's own helper checks: the timestamp header, then the
        # body as received.
        key.verify(der, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise WebhookRefused(WebhookRefusal.BAD_SIGNATURE) from None
    # Checked after the signature, so an old timestamp is only reported for a request SendGrid did sign.
    age = now.timestamp() - int(timestamp)
    if age > tolerance_seconds:
        raise WebhookRefused(WebhookRefusal.STALE_TIMESTAMP)
    if -age > tolerance_seconds:
        raise WebhookRefused(WebhookRefusal.FUTURE_TIMESTAMP)


def parse_events(body: bytes) -> list[Any]:
    """SendGrid posts a JSON array of event objects."""
    try:
        events = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRefused(WebhookRefusal.MALFORMED_BODY, 400) from None
    if not isinstance(events, list):
        raise WebhookRefused(WebhookRefusal.MALFORMED_BODY, 400)
    return events


def is_hard_bounce(event: Any) -> bool:
    """A bounce SendGrid classes as permanent (`type` "bounce", not "blocked"), or a send SendGrid dropped
    because the address bounced before."""
    if not isinstance(event, dict):
        return False
    kind = event.get("event")
    if kind == BounceEvent.BOUNCE:
        return event.get("type") == "bounce"
    if kind == BounceEvent.DROPPED:
        reason = event.get("reason")
        return isinstance(reason, str) and reason.strip().casefold() == "bounced address"
    return False


def removal_for(event: dict[str, Any]) -> EmailRemoval | None:
    """The profile change a hard bounce calls for, or None if the event does not say whose address it is."""
    user_id, email = event.get(RECIPIENT_ARG), event.get("email")
    if not isinstance(user_id, str) or not isinstance(email, str):
        return None
    try:
        return EmailRemoval(user_id=user_id, email=None, if_email=email)
    except ValidationError:
        return None


def hard_bounces(events: Iterable[Any], metrics: WebhookMetrics | None = None) -> list[Bounce]:
    """The hard bounces of a batch, one per user and address (SendGrid may repeat an event)."""
    found: dict[tuple[str, str], Bounce] = {}
    for event in events:
        if not is_hard_bounce(event):
            continue
        removal = removal_for(event)
        kind = BounceEvent(event["event"])
        outcome = BounceOutcome.UNATTRIBUTED if removal is None else BounceOutcome.REMOVAL_REQUESTED
        if metrics is not None:
            metrics.bounces.labels(provider=PROVIDER, event=kind.value, outcome=outcome.value).inc()
        if removal is not None:
            found.setdefault((removal.user_id, removal.if_email.casefold()), Bounce(kind, removal))
    return list(found.values())


def publisher(topic: Any) -> PublishUpdate:
    """Publish to a Faust topic and wait for the broker's acknowledgement: SendGrid hears 2xx only once the
    removal is stored, and retries otherwise."""

    async def publish(update: ProfileUpdate) -> None:
        sent = await topic.send(key=update.user_id.encode(), value=update.to_json())
        await sent

    return publish


def bounce_webhook_route(
    *,
    publish: PublishUpdate,
    public_key: ec.EllipticCurvePublicKey,
    clock: Clock,
    metrics: WebhookMetrics,
    path: str = DEFAULT_PATH,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    publish_timeout_seconds: float = DEFAULT_PUBLISH_TIMEOUT_SECONDS,
    receipts: Receipts | None = None,
) -> Route:
    """`POST path`: verify, pick the hard bounces, publish their removals, then answer 204. SendGrid retries
    anything but a 2xx, so a publish that fails or times out answers 503 rather than losing the bounce. A
    signed request already taken within its tolerance window is refused (409): nothing is published twice.
    Given `receipts`, the batch's other events (delivered, deferred, dropped, open, click) and its bounces
    also become status records on `herald.status` (streams/ops/receipts.py), published alongside."""

    seen = ReplayGuard(tolerance_seconds)
    receipt_metrics = ReceiptMetrics(metrics.receipts)

    async def receive(request: Request) -> Response:
        try:
            # Headers, then the body, then the signature over both, and only then is the body parsed.
            headers = request.headers
            signed = signature_headers(headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER))
            body = await read_body(request, max_body_bytes)
            now = clock()
            verify_signed(public_key, body, signed, now=now, tolerance_seconds=tolerance_seconds)
            events = parse_events(body)
            # Claimed before publishing, so two copies sent at once cannot both be taken.
            if not seen.claim(signed.timestamp, body, now=now.timestamp()):
                raise WebhookRefused(WebhookRefusal.REPLAYED, 409)
        except ReplayMemoryFull:
            metrics.requests.labels(provider=PROVIDER, outcome=WebhookOutcome.UNAVAILABLE.value).inc()
            log.warning("the %s webhook's replay memory is full; answering 503", PROVIDER)
            return Response(status_code=503)
        except WebhookRefused as exc:
            metrics.requests.labels(provider=PROVIDER, outcome=WebhookOutcome.REFUSED.value).inc()
            metrics.refused.labels(provider=PROVIDER, reason=exc.reason.value).inc()
            log.info("refused a %s webhook request: %s", PROVIDER, exc.reason)
            return Response(status_code=exc.status_code)
        bounces = hard_bounces(events, metrics)
        statuses: list[DeliveryStatus] = []
        claims: list[Claim] = []
        if receipts is not None:
            found = (sendgrid_status(event, now) for event in events if isinstance(event, dict))
            statuses, claims = receipts.select(PROVIDER, found, receipt_metrics)
        try:
            async with asyncio.timeout(publish_timeout_seconds):
                await asyncio.gather(
                    *(publish(bounce.removal) for bounce in bounces),
                    *([receipts.write(statuses)] if receipts is not None else []),
                )
        except Exception as exc:
            seen.release(signed.timestamp, body)  # SendGrid sends it again
            if receipts is not None:
                receipts.memory.release(claims)
            metrics.requests.labels(provider=PROVIDER, outcome=WebhookOutcome.UNAVAILABLE.value).inc()
            log.warning("could not publish %d email removal(s): %s", len(bounces), type(exc).__name__)
            return Response(status_code=503)
        receipt_metrics.count(PROVIDER, ReceiptOutcome.RECORDED, len(statuses))
        metrics.requests.labels(provider=PROVIDER, outcome=WebhookOutcome.ACCEPTED.value).inc()
        if bounces:
            log.info("requested removal of %d bounced email address(es)", len(bounces))
        return Response(status_code=204)

    return Route(path, receive, methods=["POST"], name="sendgrid_event_webhook")
