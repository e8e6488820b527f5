"""ApnsPushSender against a fake APNs over HTTP/2 and TLS on loopback, with a provider key made per run."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapters.push import PushToken
from adapters.push.apns import NOTIFICATION_ID_KEY, ApnsPushSender, apns_id
from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from schemas.events import Priority
from schemas.notifications import PushNotification
from schemas.users import Device, Platform, TokenKind
from tests.fakes.apns import FakeApns, apns_error, make_auth_key, make_tls_files
from tests.fakes.http import Reply

pytestmark = pytest.mark.integration

KEY_ID = "ABC123DEFG"
TEAM_ID = "DEF123GHIJ"
TOPIC = "com.example.herald"
MINUTE = 60.0


class Clock:
    """A clock shared by the adapter and the fake, moved forward by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_tls_files(tmp_path_factory.mktemp("apns-tls"))


@pytest.fixture(scope="module")
def auth_key() -> tuple[bytes, bytes]:
    return make_auth_key()


@pytest.fixture(scope="module")
def server(tls_files: tuple[Path, Path], auth_key: tuple[bytes, bytes]) -> Iterator[FakeApns]:
    cert, key = tls_files
    with FakeApns(cert, key, public_key=auth_key[1], key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC) as fake:
        yield fake


@pytest.fixture
def clock(server: FakeApns) -> Clock:
    clock = Clock()
    server.clock = clock
    return clock


@pytest.fixture
def fake(server: FakeApns, clock: Clock) -> Iterator[FakeApns]:
    yield server
    server.reset()


@pytest.fixture
async def sender(
    fake: FakeApns, clock: Clock, tls_files: tuple[Path, Path], auth_key: tuple[bytes, bytes]
) -> AsyncIterator[ApnsPushSender]:
    adapter = make_sender(fake, clock, auth_key[0], ca_file=tls_files[0])
    yield adapter
    await adapter.aclose()


def make_sender(
    fake: FakeApns,
    clock: Clock,
    private_key: bytes,
    *,
    ca_file: Path | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_concurrency: int = 20,
) -> ApnsPushSender:
    return ApnsPushSender(
        private_key,
        key_id=KEY_ID,
        team_id=TEAM_ID,
        topic=TOPIC,
        base_url=fake.url,
        timeout=0.5,
        max_concurrency=max_concurrency,
        ca_file=ca_file,
        ssl_context=ssl_context,
        clock=clock,
    )


def push(priority: Priority = Priority.NORMAL, body: str = "Your order is on its way") -> PushNotification:
    now = datetime.now(UTC)
    return PushNotification(
        notification_id="ntf_apns_1",
        event_id="evt-1",
        event_type="order.shipped",
        recipient="user-1",
        occurred_at=now,
        created_at=now,
        priority=priority,
        devices=[Device(token="ab" * 32, platform=Platform.IOS, kind=TokenKind.APNS)],
        title="Shipped",
        body=body,
        data={"order": "42"},
    )


def device(n: int) -> PushToken:
    return PushToken(f"{n:02x}" * 32, TokenKind.APNS)


async def test_a_send_goes_over_http2_with_apples_headers_and_a_valid_jwt(
    fake: FakeApns, sender: ApnsPushSender, auth_key: tuple[bytes, bytes]
) -> None:
    message = push(Priority.HIGH)
    before = len(fake.requests)

    result = await sender.send(message, [device(1)])

    (outcome,) = result.outcomes
    assert outcome.delivered
    assert outcome.message_id == apns_id(message.notification_id, device(1).value)
    (request,) = fake.requests[before:]
    assert request.alpn == "h2"
    assert (request.method, request.path, request.token) == (
        "POST",
        f"/3/device/{device(1).value}",
        device(1).value,
    )
    assert request.headers["apns-topic"] == TOPIC
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "10"
    assert request.headers["apns-expiration"] == str(int(message.created_at.timestamp() + 86400))
    assert request.headers["apns-id"] == outcome.message_id
    assert request.json() == {
        "aps": {"alert": {"title": "Shipped", "body": "Your order is on its way"}},
        "order": "42",
        NOTIFICATION_ID_KEY: "ntf_apns_1",
    }
    assert request.headers["authorization"].startswith("bearer ")
    token = request.provider_token
    assert jwt.get_unverified_header(token)["kid"] == KEY_ID
    assert jwt.decode(token, auth_key[1], algorithms=["ES256"])["iss"] == TEAM_ID


async def test_normal_priority_is_5_and_a_resend_keeps_the_apns_id(
    fake: FakeApns, sender: ApnsPushSender
) -> None:
    before = len(fake.requests)

    first = await sender.send(push(Priority.NORMAL), [device(1)])
    second = await sender.send(push(Priority.LOW), [device(1)])

    requests = fake.requests[before:]
    assert [r.headers["apns-priority"] for r in requests] == ["5", "5"]
    assert first.outcomes[0].message_id == second.outcomes[0].message_id  # Apple can de-duplicate
    assert apns_id("ntf_apns_1", device(2).value) != first.outcomes[0].message_id  # one id per device


async def test_several_tokens_share_one_connection_within_the_concurrency_bound(
    fake: FakeApns, clock: Clock, tls_files: tuple[Path, Path], auth_key: tuple[bytes, bytes]
) -> None:
    fake.refuse(device(3).value, apns_error(410, "Unregistered", timestamp=1_700_000_000_000))
    fake.delay = 0.05
    tokens = [device(n) for n in range(1, 7)]
    adapter = make_sender(fake, clock, auth_key[0], ca_file=tls_files[0], max_concurrency=2)
    before = len(fake.requests)
    try:
        result = await adapter.send(push(), tokens)
    finally:
        await adapter.aclose()

    requests = fake.requests[before:]
    assert sorted(r.token for r in requests) == sorted(t.value for t in tokens)
    assert len({r.connection for r in requests}) == 1  # multiplexed on one HTTP/2 connection
    assert fake.max_in_flight == 2
    assert [o.token for o in result.outcomes] == tokens
    assert [o.delivered for o in result.outcomes] == [True, True, False, True, True, True]
    assert result.invalid_tokens == [device(3)]
    assert result.retry_tokens == []
    error = result.outcomes[2].error
    assert isinstance(error, PermanentDeliveryError)
    assert (error.reason, error.provider_code) == ("unregistered", "Unregistered")
    assert "1700000000000" in error.detail
    assert adapter.provider_tokens_issued == 1


@pytest.mark.parametrize(
    ("reply", "reason", "code", "token_invalid"),
    [
        (apns_error(400, "BadDeviceToken"), "invalid_token", "BadDeviceToken", True),
        (apns_error(400, "DeviceTokenNotForTopic"), "token_not_for_topic", "DeviceTokenNotForTopic", False),
        (apns_error(400, "BadCollapseId"), "invalid_request", "BadCollapseId", False),
        (apns_error(400, "TopicDisallowed"), "provider_misconfigured", "TopicDisallowed", False),
    ],
)
async def test_refusals_are_permanent(
    fake: FakeApns, sender: ApnsPushSender, reply: Reply, reason: str, code: str, token_invalid: bool
) -> None:
    fake.fail_next(reply)

    result = await sender.send(push(), [device(1)])

    (outcome,) = result.outcomes
    assert isinstance(outcome.error, PermanentDeliveryError)
    assert (outcome.error.reason, outcome.error.provider_code) == (reason, code)
    assert outcome.token_invalid is token_invalid


async def test_a_malformed_token_and_a_payload_too_large_are_refused_by_the_server(
    fake: FakeApns, sender: ApnsPushSender
) -> None:
    not_hex = PushToken("not-a-device-token", TokenKind.APNS)

    bad = await sender.send(push(), [not_hex])
    large = await sender.send(push(body="x" * 5000), [device(1)])

    assert bad.invalid_tokens == [not_hex]
    error = large.outcomes[0].error
    assert isinstance(error, PermanentDeliveryError)
    assert (error.reason, error.provider_code) == ("payload_too_large", "PayloadTooLarge")
    assert not large.invalid_tokens


@pytest.mark.parametrize(
    ("reply", "reason", "code", "retry_after"),
    [
        (
            apns_error(429, "TooManyRequests", headers={"Retry-After": "30"}),
            "rate_limited",
            "TooManyRequests",
            30.0,
        ),
        (apns_error(429, "TooManyRequests"), "rate_limited", "TooManyRequests", None),
        (apns_error(503, "ServiceUnavailable"), "provider_unavailable", "ServiceUnavailable", None),
        (Reply(502, b"bad gateway"), "provider_unavailable", "502", None),
    ],
)
async def test_throttling_and_outages_are_retriable(
    fake: FakeApns, sender: ApnsPushSender, reply: Reply, reason: str, code: str, retry_after: float | None
) -> None:
    fake.fail_next(reply)

    result = await sender.send(push(), [device(1)])

    assert result.retry_tokens == [device(1)]
    error = result.outcomes[0].error
    assert isinstance(error, RetriableDeliveryError)
    assert (error.reason, error.provider_code, error.retry_after) == (reason, code, retry_after)


async def test_a_500_is_sent_exactly_once(fake: FakeApns, sender: ApnsPushSender) -> None:
    fake.fail_next(apns_error(500, "InternalServerError"))
    before = len(fake.requests)

    result = await sender.send(push(), [device(1)])

    assert len(fake.requests) - before == 1
    error = result.outcomes[0].error
    assert isinstance(error, RetriableDeliveryError) and error.provider_code == "InternalServerError"


async def test_a_hanging_server_times_out_as_retriable_after_one_request(
    fake: FakeApns, sender: ApnsPushSender
) -> None:
    fake.hang_next(seconds=5)
    before = len(fake.requests)

    result = await sender.send(push(), [device(1)])

    assert len(fake.requests) - before == 1
    error = result.outcomes[0].error
    assert isinstance(error, RetriableDeliveryError)
    assert (error.reason, error.provider_code) == ("provider_unavailable", "timeout")
    assert (await sender.send(push(), [device(2)])).outcomes[0].delivered  # the connection still serves


async def test_the_provider_token_is_reused_and_renewed_before_the_hour(
    fake: FakeApns, sender: ApnsPushSender, clock: Clock
) -> None:
    before = len(fake.requests)

    for minutes in (0, 49, 2, 49, 2):  # sends at 0, 49, 51, 100 and 102 minutes
        clock.advance(minutes * MINUTE)
        result = await sender.send(push(), [device(1)])
        assert result.outcomes[0].delivered  # the fake refuses tokens over an hour old

    tokens = [r.provider_token for r in fake.requests[before:]]
    a, b, c = dict.fromkeys(tokens)  # in the order first seen
    assert tokens == [a, a, b, b, c]  # renewed after 50 minutes, never sooner
    assert sender.provider_tokens_issued == 3


async def test_an_expired_provider_token_is_renewed_once_and_the_send_retried_once(
    fake: FakeApns, sender: ApnsPushSender, clock: Clock, auth_key: tuple[bytes, bytes]
) -> None:
    await sender.send(push(), [device(1)])
    clock.advance(30 * MINUTE)  # within the adapter's 50 minutes, and old enough for Apple to take a new one
    fake.token_max_age = 25 * MINUTE  # but Apple's clock disagrees: tokens issued 30 minutes ago are expired
    before = len(fake.requests)

    result = await sender.send(push(), [device(1), device(2), device(3)])

    assert [o.delivered for o in result.outcomes] == [True, True, True]
    requests = fake.requests[before:]
    assert len(requests) == 6  # each device: refused once, retried once
    assert sender.provider_tokens_issued == 2  # three refusals, one renewal
    old, new = dict.fromkeys(r.provider_token for r in requests)  # in the order first seen
    assert [r.provider_token for r in requests].count(new) == 3
    claims = [
        jwt.decode(t, auth_key[1], algorithms=["ES256"], options={"verify_iat": False}) for t in (old, new)
    ]
    assert claims[1]["iat"] - claims[0]["iat"] == 30 * MINUTE


async def test_a_young_refused_provider_token_is_not_renewed(fake: FakeApns, sender: ApnsPushSender) -> None:
    await sender.send(push(), [device(1)])
    fake.fail_next(apns_error(403, "ExpiredProviderToken"))
    before = len(fake.requests)

    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send(push(), [device(1)])

    assert len(fake.requests) - before == 1  # Apple refuses renewals within 20 minutes
    assert (caught.value.reason, caught.value.provider_code) == ("provider_auth", "ExpiredProviderToken")
    assert sender.provider_tokens_issued == 1


async def test_a_key_apple_does_not_know_fails_the_whole_call_after_one_renewal_at_most(
    fake: FakeApns, clock: Clock, tls_files: tuple[Path, Path]
) -> None:
    stranger, _ = make_auth_key()
    adapter = make_sender(fake, clock, stranger, ca_file=tls_files[0])
    before = len(fake.requests)
    try:
        with pytest.raises(PermanentDeliveryError) as caught:
            await adapter.send(push(), [device(1), device(2)])
        clock.advance(25 * MINUTE)
        with pytest.raises(PermanentDeliveryError):
            await adapter.send(push(), [device(1)])
    finally:
        await adapter.aclose()

    assert (caught.value.reason, caught.value.provider_code) == ("provider_auth", "InvalidProviderToken")
    # Fresh token: refused without a retry; 25 minutes on: renewed once and retried once.
    assert len(fake.requests) - before == 2 + 2
    assert adapter.provider_tokens_issued == 2


async def test_an_unreachable_server_fails_the_whole_call_as_retriable(
    clock: Clock, auth_key: tuple[bytes, bytes], unused_tcp_port: int
) -> None:
    adapter = ApnsPushSender(
        auth_key[0],
        key_id=KEY_ID,
        team_id=TEAM_ID,
        topic=TOPIC,
        base_url=f"https://127.0.0.1:{unused_tcp_port}",
        timeout=0.5,
        clock=clock,
    )
    try:
        with pytest.raises(RetriableDeliveryError) as caught:
            await adapter.send(push(), [device(1), device(2)])
    finally:
        await adapter.aclose()
    assert (caught.value.reason, caught.value.provider_code) == ("provider_unavailable", "connect")


async def test_the_servers_certificate_must_be_trusted(
    fake: FakeApns, clock: Clock, tls_files: tuple[Path, Path], auth_key: tuple[bytes, bytes]
) -> None:
    untrusting = make_sender(fake, clock, auth_key[0])  # the system's CAs only
    context = ssl.create_default_context(cafile=str(tls_files[0]))
    trusting = make_sender(fake, clock, auth_key[0], ssl_context=context)
    try:
        with pytest.raises(RetriableDeliveryError) as caught:
            await untrusting.send(push(), [device(1)])
        assert (await trusting.send(push(), [device(1)])).outcomes[0].delivered
    finally:
        await untrusting.aclose()
        await trusting.aclose()
    assert isinstance(caught.value.__cause__, Exception)
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.detail


async def test_an_fcm_token_is_refused_without_a_call(fake: FakeApns, sender: ApnsPushSender) -> None:
    before = len(fake.requests)

    result = await sender.send(push(), [PushToken("fcm-registration", TokenKind.FCM_TOKEN)])

    assert len(fake.requests) == before
    error = result.outcomes[0].error
    assert isinstance(error, PermanentDeliveryError) and error.reason == "unsupported_token"


@pytest.mark.parametrize("curve", [ec.SECP384R1(), None])
def test_a_key_that_is_not_ec_p256_is_refused_at_start_up(curve: ec.EllipticCurve | None) -> None:
    key = ec.generate_private_key(curve) if curve else rsa.generate_private_key(65537, 2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    with pytest.raises(ValueError, match="EC P-256"):
        ApnsPushSender(pem, key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC)
