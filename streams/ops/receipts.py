"""Delivery receipts: what a provider reports of a message after accepting it (Twilio's status callbacks,
SendGrid's events), as status records on `herald.status` joined to the notification, once and in order."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

from prometheus_client import Counter
from pydantic import ValidationError
from starlette.datastructures import MultiDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import SIGNATURE_HEADER as TWILIO_SIGNATURE_HEADER
from twilio.request_validator import SIGNATURE_SETTINGS_HEADER, RequestValidator, get_signature_algorithm

from adapters.email.sendgrid import ATTEMPT_ARG, EVENT_ID_ARG, NOTIFICATION_ID_ARG, RECIPIENT_ARG
from adapters.sms.twilio import (
    ATTEMPT_PARAM,
    EVENT_ID_PARAM,
    NOTIFICATION_ID_PARAM,
    RECIPIENT_PARAM,
    STATUS_CALLBACK_PATH,
)
from kernel.errors import WebhookRefused
from schemas.channels import Channel
from schemas.reasons import DeliveryReason
from schemas.status import RECEIPT_RANKS, DeliveryStatus, Outcome
from schemas.webhooks import ReceiptOutcome, WebhookOutcome, WebhookRefusal
from streams.ops.request_body import read_body

if TYPE_CHECKING:
    from streams.ops.bounce_webhook import WebhookMetrics

log = logging.getLogger("herald.receipts")

TWILIO = "twilio"
SENDGRID = "sendgrid"
# Notifications whose highest receipt is remembered: an entry is ~200 bytes, so ~20 MB at most.
DEFAULT_MEMORY = 100_000
TWILIO_MAX_BODY_BYTES = 64 * 1024  # a status callback is a form of a few hundred bytes
DEFAULT_PUBLISH_TIMEOUT_SECONDS = 10.0

PublishStatus = Callable[[DeliveryStatus], Awaitable[None]]
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Receipt:
    """One provider report, mapped: `outcome` None means Herald writes nothing for it."""

    outcome: Outcome | None
    reason: DeliveryReason | None = None
    provider_code: str | None = None


# --- Twilio -------------------------------------------------------------------------------------------------

# Twilio's MessageStatus values that become a status record. The others (queued, sending, sent, accepted,
# scheduled, canceled, and the inbound receiving, received) add nothing to Herald's own `delivered`, which
# already records that Twilio accepted the message.
TWILIO_STATUSES: Final[dict[str, Outcome]] = {
    "delivered": Outcome.PROVIDER_DELIVERED,
    "undelivered": Outcome.PROVIDER_FAILED,
    "failed": Outcome.PROVIDER_FAILED,
    "read": Outcome.OPENED,  # WhatsApp and RCS read receipts
}
# Twilio's delivery error codes (https://www.twilio.com/docs/api/errors) with Herald's reason; any other code
# of a failed message is `provider_refused`.
TWILIO_ERROR_REASONS: Final[dict[str, DeliveryReason]] = {
    "30003": DeliveryReason.UNREACHABLE_NUMBER,  # handset off or out of coverage
    "30004": DeliveryReason.RECIPIENT_REFUSED,  # blocked by the recipient or their carrier
    "30005": DeliveryReason.INVALID_NUMBER,  # unknown or inactive number
    "30006": DeliveryReason.NOT_MOBILE,  # a landline, or a carrier that cannot take SMS
    "21610": DeliveryReason.UNSUBSCRIBED,  # the number sent STOP
    "21408": DeliveryReason.REGION_NOT_ENABLED,
    "30008": DeliveryReason.PROVIDER_REFUSED,
}


def twilio_receipt(form: Mapping[str, str]) -> Receipt:
    """What a status callback's form says: its MessageStatus, and for a failure its ErrorCode."""
    outcome = TWILIO_STATUSES.get(str(form.get("MessageStatus", "")).strip().lower())
    if outcome is not Outcome.PROVIDER_FAILED:
        return Receipt(outcome)
    code = str(form.get("ErrorCode") or "").strip() or None
    reason = TWILIO_ERROR_REASONS.get(code or "", DeliveryReason.PROVIDER_REFUSED)
    return Receipt(outcome, reason, code)


# --- SendGrid -----------------------------------------------------------------------------------------------


def sendgrid_receipt(event: Mapping[str, Any]) -> Receipt:
    """What one Event Webhook event says. Bounces and drops are failures (a hard bounce's address removal is
    the bounce webhook's, unchanged); processed, spam reports and unsubscribes write nothing here."""
    kind = event.get("event")
    if kind == "delivered":
        return Receipt(Outcome.PROVIDER_DELIVERED)
    if kind == "deferred":
        return Receipt(Outcome.PROVIDER_DEFERRED)
    if kind == "open":
        return Receipt(Outcome.OPENED)
    if kind == "click":
        return Receipt(Outcome.CLICKED)
    if kind == "bounce":
        status = event.get("status")
        code = status if isinstance(status, str) and status.strip() else None
        # "blocked" is SendGrid's soft bounce: the receiving server refused this message, not the address.
        hard = event.get("type") == "bounce"
        reason = DeliveryReason.RECIPIENT_REFUSED if hard else DeliveryReason.PROVIDER_REFUSED
        return Receipt(Outcome.PROVIDER_FAILED, reason, code)
    if kind == "dropped":
        why = event.get("reason")
        bounced = isinstance(why, str) and why.strip().casefold() == "bounced address"
        reason = DeliveryReason.RECIPIENT_REFUSED if bounced else DeliveryReason.PROVIDER_REFUSED
        return Receipt(Outcome.PROVIDER_FAILED, reason)
    return Receipt(None)


def _attempt(value: object) -> int:
    """The attempt the provider's message was, as carried back (a string); 1 when it is missing or odd."""
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return int(text) if text.isdigit() and 0 < int(text) < 1_000_000 else 1


def _event_time(value: object, default: datetime) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 100_000_000_000:
        return datetime.fromtimestamp(value, UTC)
    return default


def status_record(
    receipt: Receipt,
    *,
    ids: Mapping[str, Any],
    names: tuple[str, str, str, str],
    channel: Channel,
    provider: str,
    at: datetime,
    provider_message_id: object,
) -> DeliveryStatus | None:
    """The status record of a receipt whose outcome is one Herald writes, joined through `ids` (the callback
    URL's query or the event's custom args, named by `names`: notification id, event id, recipient, attempt);
    None if they do not say which notification it is."""
    nid, eid, recipient, attempt = (ids.get(name) for name in names)
    if receipt.outcome is None or not all(isinstance(v, str) and v for v in (nid, eid, recipient)):
        return None
    message_id = provider_message_id if isinstance(provider_message_id, str) and provider_message_id else None
    try:
        return DeliveryStatus(
            notification_id=str(nid),
            event_id=str(eid),
            recipient=str(recipient),
            channel=channel,
            provider=provider,
            outcome=receipt.outcome,
            attempt=_attempt(attempt),
            at=at,
            provider_message_id=message_id,
            reason=receipt.reason,
            provider_code=receipt.provider_code,
        )
    except ValidationError:
        return None


def twilio_status(
    form: Mapping[str, str], query: Mapping[str, str], at: datetime
) -> tuple[Receipt, DeliveryStatus | None]:
    receipt = twilio_receipt(form)
    names = (NOTIFICATION_ID_PARAM, EVENT_ID_PARAM, RECIPIENT_PARAM, ATTEMPT_PARAM)
    record = status_record(
        receipt,
        ids=query,
        names=names,
        channel=Channel.SMS,
        provider=TWILIO,
        at=at,
        provider_message_id=form.get("MessageSid"),
    )
    return receipt, record


def sendgrid_status(event: Mapping[str, Any], now: datetime) -> tuple[Receipt, DeliveryStatus | None]:
    receipt = sendgrid_receipt(event)
    names = (NOTIFICATION_ID_ARG, EVENT_ID_ARG, RECIPIENT_ARG, ATTEMPT_ARG)
    record = status_record(
        receipt,
        ids=event,
        names=names,
        channel=Channel.EMAIL,
        provider=SENDGRID,
        at=_event_time(event.get("timestamp"), now),
        provider_message_id=event.get("sg_message_id"),
    )
    return receipt, record


# --- once each, never backwards -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    notification_id: str
    rank: int
    previous: int


class ReceiptMemory:
    """The highest receipt rank written per notification, for the most recent `capacity` notifications (the
    least recently reported forgotten first). A receipt is written only above that rank: a replay, or a weaker
    report arriving late (deferred after delivered), writes nothing. It lives in one worker process: after a
    restart, or on another worker, a replay may be written again, and consumers take the highest rank per
    notification (README, "Delivery receipts")."""

    def __init__(self, capacity: int = DEFAULT_MEMORY) -> None:
        self._capacity = capacity
        self._ranks: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ranks)

    def claim(self, status: DeliveryStatus) -> Claim | None:
        """A claim to write `status`, or None when a report as strong was already written."""
        rank = RECEIPT_RANKS[Outcome(status.outcome)]
        nid = status.notification_id
        previous = self._ranks.get(nid, 0)
        if nid in self._ranks:
            self._ranks.move_to_end(nid)
        if rank <= previous:
            return None
        self._ranks[nid] = rank
        while len(self._ranks) > self._capacity:
            self._ranks.popitem(last=False)
        return Claim(nid, rank, previous)

    def release(self, claims: Iterable[Claim]) -> None:
        """Undo claims whose records were not published (answered 503, so the provider sends them again)."""
        for claim in claims:
            if self._ranks.get(claim.notification_id) == claim.rank:
                if claim.previous:
                    self._ranks[claim.notification_id] = claim.previous
                else:
                    del self._ranks[claim.notification_id]


def in_rank_order(found: Iterable[DeliveryStatus]) -> list[DeliveryStatus]:
    """A request's receipts, weakest first per notification, so one request says the same whatever order
    the provider listed its events in."""
    return sorted(found, key=lambda s: RECEIPT_RANKS[Outcome(s.outcome)])


# --- publishing ---------------------------------------------------------------------------------------------


class ReceiptMetrics:
    def __init__(self, receipts: Counter) -> None:
        self.receipts = receipts

    def count(self, provider: str, outcome: ReceiptOutcome, amount: int = 1) -> None:
        if amount:
            self.receipts.labels(provider=provider, outcome=outcome.value).inc(amount)


@dataclass
class Receipts:
    """What a webhook needs to write receipts: where to publish a status record, and the memory of those
    written. The SendGrid webhook writes them only when given one (HERALD_PUBLIC_BASE_URL set)."""

    publish: PublishStatus
    memory: ReceiptMemory

    def select(
        self, provider: str, found: Iterable[tuple[Receipt, DeliveryStatus | None]], metrics: ReceiptMetrics
    ) -> tuple[list[DeliveryStatus], list[Claim]]:
        """The records to write of a request's receipts, claimed in the memory, each receipt counted."""
        records: list[DeliveryStatus] = []
        for receipt, record in found:
            if receipt.outcome is None:
                metrics.count(provider, ReceiptOutcome.IGNORED)
            elif record is None:
                metrics.count(provider, ReceiptOutcome.UNATTRIBUTED)
            else:
                records.append(record)
        written: list[DeliveryStatus] = []
        claims: list[Claim] = []
        for record in in_rank_order(records):
            claim = self.memory.claim(record)
            if claim is None:
                metrics.count(provider, ReceiptOutcome.SUPERSEDED)
                continue
            claims.append(claim)
            written.append(record)
        return written, claims

    async def write(self, records: list[DeliveryStatus]) -> None:
        await asyncio.gather(*(self.publish(record) for record in records))


def status_publisher(topic: Any) -> PublishStatus:
    """Publish to the Faust status topic, keyed by recipient like every status record, and wait for the
    broker's acknowledgement: the provider hears 2xx only once the record is stored."""

    async def publish(status: DeliveryStatus) -> None:
        sent = await topic.send(key=status.recipient.encode(), value=status.to_json())
        await sent

    return publish


# --- the Twilio status callback -----------------------------------------------------------------------------


def twilio_callback_url(public_base_url: str, request: Request) -> str:
    """The URL Twilio signed: the public base URL, the callback path, and the query exactly as it came."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    url = f"{public_base_url.rstrip('/')}{STATUS_CALLBACK_PATH}"
    return f"{url}?{query}" if query else url


def twilio_status_route(
    *,
    auth_token: str,
    public_base_url: str,
    receipts: Receipts,
    clock: Clock,
    webhook_metrics: WebhookMetrics,
    max_body_bytes: int = TWILIO_MAX_BODY_BYTES,
    publish_timeout_seconds: float = DEFAULT_PUBLISH_TIMEOUT_SECONDS,
) -> Route:
    """`POST /webhooks/twilio/status`: check the X-Twilio-Signature with the SDK's validator (403 otherwise),
    map the MessageStatus, write the status record, answer 204. A publish that fails answers 503."""
    validator = RequestValidator(auth_token)
    metrics = ReceiptMetrics(webhook_metrics.receipts)

    def refuse(reason: WebhookRefusal, status_code: int) -> Response:
        webhook_metrics.requests.labels(provider=TWILIO, outcome=WebhookOutcome.REFUSED.value).inc()
        webhook_metrics.refused.labels(provider=TWILIO, reason=reason.value).inc()
        log.info("refused a %s webhook request: %s", TWILIO, reason)
        return Response(status_code=status_code)

    async def receive(request: Request) -> Response:
        signature = request.headers.get(TWILIO_SIGNATURE_HEADER, "").strip()
        if not signature:
            return refuse(WebhookRefusal.MISSING_SIGNATURE, 403)
        try:
            body = await read_body(request, max_body_bytes)
        except WebhookRefused as exc:
            return refuse(exc.reason, exc.status_code)
        try:
            form = MultiDict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            form = None
        algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
        url = twilio_callback_url(public_base_url, request)
        if form is None or not validator.validate(url, form, signature, algorithm):
            return refuse(WebhookRefusal.BAD_SIGNATURE, 403)
        query = dict(request.query_params)
        receipt, record = twilio_status(dict(form), query, clock())
        records, claims = receipts.select(TWILIO, [(receipt, record)], metrics)
        try:
            async with asyncio.timeout(publish_timeout_seconds):
                await receipts.write(records)
        except Exception as exc:
            receipts.memory.release(claims)
            webhook_metrics.requests.labels(provider=TWILIO, outcome=WebhookOutcome.UNAVAILABLE.value).inc()
            log.warning("could not publish a %s delivery receipt: %s", TWILIO, type(exc).__name__)
            return Response(status_code=503)
        metrics.count(TWILIO, ReceiptOutcome.RECORDED, len(records))
        webhook_metrics.requests.labels(provider=TWILIO, outcome=WebhookOutcome.ACCEPTED.value).inc()
        return Response(status_code=204)

    return Route(STATUS_CALLBACK_PATH, receive, methods=["POST"], name="twilio_status_callback")
