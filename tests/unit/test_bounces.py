"""The SendGrid bounce webhook: signature checks, which events remove an address, the route in process."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from prometheus_client import CollectorRegistry
from sendgrid.helpers.eventwebhook import EventWebhook
from starlette.applications import Starlette

from adapters.email.sendgrid import ATTEMPT_ARG, EVENT_ID_ARG, NOTIFICATION_ID_ARG, SendGridEmailSender
from kernel.errors import WebhookRefused
from schemas.notifications import EmailNotification
from schemas.users import ProfileUpdate, UserProfile
from streams.ops.bounce_webhook import (
    DEFAULT_PATH,
    RECIPIENT_ARG,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    EmailRemoval,
    WebhookMetrics,
    bounce_webhook_route,
    hard_bounces,
    is_hard_bounce,
    load_public_key,
    parse_events,
    publisher,
    verify_request,
)
from tests.fakes.sendgrid_events import SendGridSigner, batch, bounce, dropped, event

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
NOW_TS = int(NOW.timestamp())
TOLERANCE = 300.0


@pytest.fixture(scope="module")
def signer() -> SendGridSigner:
    return SendGridSigner()


def verify(signer: SendGridSigner, body: bytes, headers: dict[str, str], **overrides: Any) -> None:
    verify_request(
        overrides.pop("key", load_public_key(signer.public_key_b64)),
        body,
        headers.get(SIGNATURE_HEADER),
        headers.get(TIMESTAMP_HEADER),
        now=overrides.pop("now", NOW),
        tolerance_seconds=TOLERANCE,
    )


def refusal(call: Callable[[], object]) -> str:
    with pytest.raises(WebhookRefused) as caught:
        call()
    return caught.value.reason


# --- signature ------------------------------------------------------------------------------------------


def test_a_body_signed_like_sendgrid_is_accepted(signer: SendGridSigner) -> None:
    body = batch(bounce("ada@example.com", "ada"), event("delivered", "bob@example.com", "bob"))
    verify(signer, body, signer.headers(body, NOW_TS))


def test_our_signer_agrees_with_sendgrids_own_verifier(signer: SendGridSigner) -> None:
    # The SDK's helper is SendGrid's reference for what is signed; our fake must sign what it checks.
    body = batch(bounce("zoë@example.com", "zoe"))
    headers = signer.headers(body, NOW_TS)
    helper = EventWebhook(signer.public_key_b64)
    assert helper.verify_signature(body.decode(), headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER])


def test_a_tampered_body_is_refused(signer: SendGridSigner) -> None:
    body = batch(bounce("ada@example.com", "ada"))
    headers = signer.headers(body, NOW_TS)
    tampered = body.replace(b'"ada"', b'"eve"')
    assert refusal(lambda: verify(signer, tampered, headers)) == "bad_signature"


def test_a_signature_by_another_key_is_refused(signer: SendGridSigner) -> None:
    body = batch(bounce("ada@example.com", "ada"))
    headers = SendGridSigner().headers(body, NOW_TS)
    assert refusal(lambda: verify(signer, body, headers)) == "bad_signature"


def test_the_timestamp_is_part_of_what_is_signed(signer: SendGridSigner) -> None:
    body = batch(bounce("ada@example.com", "ada"))
    headers = {**signer.headers(body, NOW_TS), TIMESTAMP_HEADER: str(NOW_TS + 1)}
    assert refusal(lambda: verify(signer, body, headers)) == "bad_signature"


@pytest.mark.parametrize(
    ("offset", "reason"), [(-TOLERANCE - 1, "stale_timestamp"), (TOLERANCE + 1, "future_timestamp")]
)
def test_a_timestamp_outside_the_tolerance_is_refused(
    signer: SendGridSigner, offset: float, reason: str
) -> None:
    body = batch(bounce("ada@example.com", "ada"))
    headers = signer.headers(body, int(NOW_TS + offset))
    assert refusal(lambda: verify(signer, body, headers)) == reason


def test_a_timestamp_within_the_tolerance_is_accepted(signer: SendGridSigner) -> None:
    body = batch(bounce("ada@example.com", "ada"))
    verify(signer, body, signer.headers(body, int(NOW_TS - TOLERANCE)))


@pytest.mark.parametrize(
    ("missing", "reason"),
    [(SIGNATURE_HEADER, "missing_signature"), (TIMESTAMP_HEADER, "missing_timestamp")],
)
def test_a_missing_header_is_refused(signer: SendGridSigner, missing: str, reason: str) -> None:
    body = batch(bounce("ada@example.com", "ada"))
    headers = {k: v for k, v in signer.headers(body, NOW_TS).items() if k != missing}
    assert refusal(lambda: verify(signer, body, headers)) == reason


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        (SIGNATURE_HEADER, "not base64!", "malformed_signature"),
        (SIGNATURE_HEADER, "AAAA", "bad_signature"),  # base64, but not a DER signature
        (TIMESTAMP_HEADER, "2026-11-24T10:00:00Z", "malformed_timestamp"),
        (TIMESTAMP_HEADER, "-5", "malformed_timestamp"),
    ],
)
def test_malformed_headers_are_refused(signer: SendGridSigner, header: str, value: str, reason: str) -> None:
    body = batch(bounce("ada@example.com", "ada"))
    headers = {**signer.headers(body, NOW_TS), header: value}
    assert refusal(lambda: verify(signer, body, headers)) == reason


# --- the verification key -------------------------------------------------------------------------------


def test_the_key_is_read_as_sendgrid_shows_it_or_as_pem(signer: SendGridSigner) -> None:
    expected = signer.private_key.public_key().public_numbers()
    assert load_public_key(signer.public_key_b64).public_numbers() == expected
    assert load_public_key(signer.public_key_pem).public_numbers() == expected
    wrapped = "\n".join(signer.public_key_b64[i : i + 64] for i in range(0, len(signer.public_key_b64), 64))
    assert load_public_key(f"  {wrapped}\n").public_numbers() == expected


def _public_b64(private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    import base64

    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a key",
        "QUJD",  # base64, not DER
        _public_b64(ec.generate_private_key(ec.SECP384R1())),
        _public_b64(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ],
    ids=["empty", "junk", "not-der", "p384", "rsa"],
)
def test_anything_but_a_p256_public_key_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="key"):
        load_public_key(text)


# --- which events remove an address ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "hard"),
    [
        (bounce("a@example.com", "a"), True),
        (bounce("a@example.com", "a", type="blocked"), False),
        ({k: v for k, v in bounce("a@example.com", "a").items() if k != "type"}, False),
        (dropped("a@example.com", "a"), True),
        (dropped("a@example.com", "a", reason="bounced address "), True),
        (dropped("a@example.com", "a", reason="Unsubscribed Address"), False),
        (dropped("a@example.com", "a", reason="Spam Reporting Address"), False),
        (dropped("a@example.com", "a", reason="Invalid"), False),
        (event("deferred", "a@example.com", "a"), False),
        (event("delivered", "a@example.com", "a"), False),
        (event("spamreport", "a@example.com", "a"), False),
        ("bounce", False),
        (None, False),
    ],
    ids=[
        "bounce",
        "blocked",
        "bounce-without-type",
        "dropped-bounced-address",
        "dropped-bounced-address-spelling",
        "dropped-unsubscribed",
        "dropped-spam",
        "dropped-invalid",
        "deferred",
        "delivered",
        "spamreport",
        "not-an-object",
        "null",
    ],
)
def test_only_hard_bounces_and_bounced_address_drops_count(payload: Any, hard: bool) -> None:
    assert is_hard_bounce(payload) is hard


def test_a_batch_gives_one_conditional_removal_per_user_and_address() -> None:
    metrics = WebhookMetrics(CollectorRegistry())
    events = [
        event("delivered", "bob@example.com", "bob"),
        bounce("ada@example.com", "ada"),
        dropped("ADA@example.com", "ada"),  # the same address again, as SendGrid may write it
        bounce("cy@example.com", "cy", type="blocked"),
        dropped("dee@example.com", "dee"),
        bounce("lost@example.com", None),  # sent before recipients were tagged, or by someone else
        bounce("not an address", "eve"),
    ]

    found = hard_bounces(events, metrics)

    assert [(b.event, b.removal) for b in found] == [
        ("bounce", EmailRemoval(user_id="ada", email=None, if_email="ada@example.com")),
        ("dropped", EmailRemoval(user_id="dee", email=None, if_email="dee@example.com")),
    ]
    sample = metrics.bounces.labels
    assert sample(provider="sendgrid", event="bounce", outcome="removal_requested")._value.get() == 1
    assert sample(provider="sendgrid", event="dropped", outcome="removal_requested")._value.get() == 2
    assert sample(provider="sendgrid", event="bounce", outcome="unattributed")._value.get() == 2


def test_a_removal_clears_the_email_only_and_names_the_address_it_expects() -> None:
    removal = EmailRemoval(user_id="ada", email=None, if_email="ada@example.com")

    assert json.loads(removal.to_json()) == {"user_id": "ada", "email": None, "if_email": "ada@example.com"}
    # Taken as a plain update (what the directory does once it knows `if_email`), only the email changes.
    stored = UserProfile(user_id="ada", email="ada@example.com", phone="+33612345678", locale="fr")
    plain = ProfileUpdate(user_id="ada", email=None)
    assert plain.apply_to(stored) == stored.model_copy(update={"email": None})


@pytest.mark.parametrize("body", [b"{not json", b'{"event": "bounce"}', b'"[]"', b"\xff\xfe"])
def test_a_body_that_is_not_an_array_of_events_is_refused(body: bytes) -> None:
    with pytest.raises(WebhookRefused) as caught:
        parse_events(body)
    assert (caught.value.reason, caught.value.status_code) == ("malformed_body", 400)


# --- the route ------------------------------------------------------------------------------------------


class RecordingPublisher:
    def __init__(self, *, fail: BaseException | None = None, hang: bool = False) -> None:
        self.published: list[ProfileUpdate] = []
        self._fail = fail
        self._hang = hang

    async def __call__(self, update: ProfileUpdate) -> None:
        if self._hang:
            await asyncio.Event().wait()
        if self._fail is not None:
            raise self._fail
        self.published.append(update)


def client_for(
    signer: SendGridSigner, publish: RecordingPublisher, metrics: WebhookMetrics, **options: Any
) -> httpx.AsyncClient:
    route = bounce_webhook_route(
        publish=publish,
        public_key=load_public_key(signer.public_key_b64),
        clock=lambda: NOW,
        metrics=metrics,
        tolerance_seconds=TOLERANCE,
        **options,
    )
    app = Starlette(routes=[route])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker")


def count(metrics: WebhookMetrics, name: str, **labels: str) -> float:
    sample = getattr(metrics, name).labels(**labels)
    return float(sample._value.get())


async def test_a_signed_batch_publishes_the_removals_and_answers_204(signer: SendGridSigner) -> None:
    publish, metrics = RecordingPublisher(), WebhookMetrics(CollectorRegistry())
    body = batch(bounce("ada@example.com", "ada"), event("delivered", "bob@example.com", "bob"))

    async with client_for(signer, publish, metrics) as client:
        response = await client.post(DEFAULT_PATH, content=body, headers=signer.headers(body, NOW_TS))

    assert response.status_code == 204
    assert publish.published == [EmailRemoval(user_id="ada", email=None, if_email="ada@example.com")]
    assert count(metrics, "requests", provider="sendgrid", outcome="accepted") == 1


async def test_a_batch_without_hard_bounces_is_acknowledged(signer: SendGridSigner) -> None:
    publish, metrics = RecordingPublisher(), WebhookMetrics(CollectorRegistry())
    body = batch(event("open", "bob@example.com", "bob"))

    async with client_for(signer, publish, metrics) as client:
        response = await client.post(DEFAULT_PATH, content=body, headers=signer.headers(body, NOW_TS))

    assert response.status_code == 204 and publish.published == []


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda h: {**h, SIGNATURE_HEADER: SendGridSigner().signature(b"[]", NOW_TS)}, "bad_signature"),
        (lambda h: {k: v for k, v in h.items() if k != SIGNATURE_HEADER}, "missing_signature"),
        (lambda h: {k: v for k, v in h.items() if k != TIMESTAMP_HEADER}, "missing_timestamp"),
    ],
    ids=["bad", "no-signature", "no-timestamp"],
)
async def test_an_unsigned_or_badly_signed_request_is_refused_with_401(
    signer: SendGridSigner, spoil: Callable[[dict[str, str]], dict[str, str]], reason: str
) -> None:
    publish, metrics = RecordingPublisher(), WebhookMetrics(CollectorRegistry())
    body = batch(bounce("ada@example.com", "ada"))

    async with client_for(signer, publish, metrics) as client:
        response = await client.post(DEFAULT_PATH, content=body, headers=spoil(signer.headers(body, NOW_TS)))

    assert response.status_code == 401
    assert publish.published == []
    assert count(metrics, "refused", provider="sendgrid", reason=reason) == 1
    assert count(metrics, "requests", provider="sendgrid", outcome="refused") == 1


async def test_a_replayed_old_request_is_refused(signer: SendGridSigner) -> None:
    publish, metrics = RecordingPublisher(), WebhookMetrics(CollectorRegistry())
    body = batch(bounce("ada@example.com", "ada"))

    async with client_for(signer, publish, metrics) as client:
        old = signer.headers(body, NOW_TS - 3600)
        response = await client.post(DEFAULT_PATH, content=body, headers=old)

    assert response.status_code == 401 and publish.published == []
    assert count(metrics, "refused", provider="sendgrid", reason="stale_timestamp") == 1


# P-256's group order: (r, s) and (r, n - s) are both valid signatures of the same message.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _malleated(signature: str) -> str:
    """The same signature, rewritten: what an attacker can do without the key."""
    r, s = decode_dss_signature(base64.b64decode(signature))
    return base64.b64encode(encode_dss_signature(r, _P256_ORDER - s)).decode()


async def test_a_signed_request_replayed_within_the_tolerance_is_refused(signer: SendGridSigner) -> None:
    publish, metrics = RecordingPublisher(), WebhookMetrics(CollectorRegistry())
    body = batch(bounce("ada@example.com", "ada"))
    headers = signer.headers(body, NOW_TS)
    rewritten = {**headers, SIGNATURE_HEADER: _malleated(headers[SIGNATURE_HEADER])}
    verify(signer, body, rewritten)  # still SendGrid's signature, as far as anyone can check

    async with client_for(signer, publish, metrics) as client:
        first = await client.post(DEFAULT_PATH, content=body, headers=headers)
        replays = [await client.post(DEFAULT_PATH, content=body, headers=h) for h in (headers, rewritten)]

    assert first.status_code == 204
    assert [r.status_code for r in replays] == [409, 409]
    assert len(publish.published) == 1
    assert count(metrics, "refused", provider="sendgrid", reason="replayed") == 2


async def test_a_request_answered_503_can_be_retried_as_it_was(signer: SendGridSigner) -> None:
    metrics = WebhookMetrics(CollectorRegistry())
    body = batch(bounce("ada@example.com", "ada"))
    headers = signer.headers(body, NOW_TS)
    failing, working = RecordingPublisher(fail=ConnectionError("broker down")), RecordingPublisher()
    route_publish: list[RecordingPublisher] = [failing]

    async def publish(update: ProfileUpdate) -> None:
        await route_publish[0](update)

    async with client_for(signer, publish, metrics) as client:  # type: ignore[arg-type]
        assert (await client.post(DEFAULT_PATH, content=body, headers=headers)).status_code == 503
        route_publish[0] = working
        assert (await client.post(DEFAULT_PATH, content=body, headers=headers)).status_code == 204
    assert len(working.published) == 1


async def test_the_same_events_signed_again_are_not_a_replay(signer: SendGridSigner) -> None:
    publish, metrics = RecordingPublisher(), WebhookMetrics(CollectorRegistry())
    body = batch(bounce("ada@example.com", "ada"))

    async with client_for(signer, publish, metrics) as client:
        for timestamp in (NOW_TS - 1, NOW_TS):  # SendGrid's own retry is a new signed request
            response = await client.post(DEFAULT_PATH, content=body, headers=signer.headers(body, timestamp))
            assert response.status_code == 204


async def test_an_oversized_body_is_refused_before_it_is_read_whole(signer: SendGridSigner) -> None:
    publish, metrics = RecordingPublisher(), WebhookMetrics(CollectorRegistry())
    body = batch(*[bounce(f"u{i}@example.com", f"u{i}") for i in range(50)])

    async with client_for(signer, publish, metrics, max_body_bytes=1024) as client:
        response = await client.post(DEFAULT_PATH, content=body, headers=signer.headers(body, NOW_TS))

    assert response.status_code == 413 and publish.published == []
    assert count(metrics, "refused", provider="sendgrid", reason="too_large") == 1


async def test_a_signed_body_that_is_not_an_event_array_is_a_400(signer: SendGridSigner) -> None:
    publish, metrics = RecordingPublisher(), WebhookMetrics(CollectorRegistry())
    body = b'{"event": "bounce"}'

    async with client_for(signer, publish, metrics) as client:
        response = await client.post(DEFAULT_PATH, content=body, headers=signer.headers(body, NOW_TS))

    assert response.status_code == 400
    assert count(metrics, "refused", provider="sendgrid", reason="malformed_body") == 1


@pytest.mark.parametrize(
    "publish",
    [RecordingPublisher(fail=ConnectionError("broker down")), RecordingPublisher(hang=True)],
    ids=["fails", "hangs"],
)
async def test_a_removal_that_cannot_be_published_answers_503_so_sendgrid_retries(
    signer: SendGridSigner, publish: RecordingPublisher
) -> None:
    metrics = WebhookMetrics(CollectorRegistry())
    body = batch(bounce("ada@example.com", "ada"))

    async with client_for(signer, publish, metrics, publish_timeout_seconds=0.2) as client:
        response = await client.post(DEFAULT_PATH, content=body, headers=signer.headers(body, NOW_TS))

    assert response.status_code == 503
    assert count(metrics, "requests", provider="sendgrid", outcome="unavailable") == 1


async def test_only_post_is_served_and_the_path_is_configurable(signer: SendGridSigner) -> None:
    publish, metrics = RecordingPublisher(), WebhookMetrics(CollectorRegistry())
    body = batch(bounce("ada@example.com", "ada"))

    async with client_for(signer, publish, metrics, path="/hooks/sg") as client:
        assert (await client.get("/hooks/sg")).status_code == 405
        assert (await client.post(DEFAULT_PATH, content=body)).status_code == 404
        response = await client.post("/hooks/sg", content=body, headers=signer.headers(body, NOW_TS))

    assert response.status_code == 204 and len(publish.published) == 1


class RecordingTopic:
    """A Faust topic's `send`: queues the record and returns the future of the broker's acknowledgement."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, asyncio.Future[None]]] = []

    async def send(self, *, key: bytes, value: bytes) -> asyncio.Future[None]:
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((key, value, acked))
        return acked


async def test_the_worker_publisher_returns_only_once_the_broker_acknowledged() -> None:
    topic = RecordingTopic()
    removal = EmailRemoval(user_id="ada", email=None, if_email="ada@example.com")

    publishing: asyncio.Future[None] = asyncio.ensure_future(publisher(topic)(removal))
    for _ in range(5):
        await asyncio.sleep(0)

    [(key, value, acked)] = topic.sent
    assert (key, value) == (b"ada", removal.to_json())
    assert not publishing.done()
    acked.set_result(None)
    await asyncio.wait_for(publishing, 1)


# --- what SendGrid must carry ---------------------------------------------------------------------------


def test_sendgrid_sends_carry_the_recipient_for_the_webhook() -> None:
    sender = SendGridEmailSender("SG.test-key", sender="Herald <herald@example.com>", max_workers=1)
    now = datetime.now(UTC)
    message = EmailNotification(
        notification_id="ntf_1",
        event_id="evt-1",
        event_type="order.shipped",
        recipient="ada",
        occurred_at=now,
        created_at=now,
        to="ada@example.com",
        subject="Shipped",
        text="Hi",
    )
    try:
        body = sender._compose(message)
    finally:
        sender._threads.shutdown()
    assert body["custom_args"] == {
        NOTIFICATION_ID_ARG: "ntf_1",
        RECIPIENT_ARG: "ada",
        EVENT_ID_ARG: "evt-1",
        ATTEMPT_ARG: "1",
    }
