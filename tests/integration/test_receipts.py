"""Delivery receipts over HTTP on a real broker: the callback URL Herald gives Twilio and the custom args it
gives SendGrid come back in signed callbacks from a local client, and become the exact status records on the
status topic, keyed by recipient; forged callbacks are refused."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from twilio.request_validator import RequestValidator

from adapters.broker.embedded import free_port
from adapters.broker.topics import ensure_topics
from adapters.email.sendgrid import SendGridEmailSender
from adapters.sms.twilio import STATUS_CALLBACK_PATH, TwilioSmsSender
from schemas.notifications import EmailNotification, SmsNotification
from schemas.users import ProfileUpdate
from streams.ops.bounce_webhook import DEFAULT_PATH, WebhookMetrics, bounce_webhook_route, load_public_key
from streams.ops.receipts import ReceiptMemory, Receipts, status_publisher, twilio_status_route
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.sendgrid_events import SendGridSigner, batch
from tests.fakes.twilio import FakeTwilio
from tests.integration.stack import Stack, read_topic, wait_ready

pytestmark = pytest.mark.integration

PARTITIONS = 4
NOW = datetime.now(UTC).replace(microsecond=0)


class ProducerTopic:
    """The part of a Faust topic `status_publisher` uses, over a plain aiokafka producer (murmur2 keys, as the
    worker's)."""

    def __init__(self, producer: AIOKafkaProducer, name: str) -> None:
        self._producer, self._name = producer, name

    async def send(self, *, key: bytes, value: bytes) -> Any:
        return await self._producer.send(self._name, key=key, value=value)


@dataclass
class Receiver:
    base: str  # the public base URL: here the server's own address
    stack: Stack
    metrics: CollectorRegistry
    removals: list[ProfileUpdate]


@pytest.fixture(scope="module")
def signer() -> SendGridSigner:
    return SendGridSigner()


@pytest.fixture(scope="module")
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


@pytest.fixture(scope="module")
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as server:
        yield server


@pytest.fixture
async def receiver(stack_factory: Any, signer: SendGridSigner, twilio: FakeTwilio) -> AsyncIterator[Receiver]:
    """Both webhook routes in a small Starlette app under uvicorn, publishing status records to the broker."""
    stack: Stack = stack_factory()
    status = stack.topic("status")
    await ensure_topics(stack.bootstrap, [status], PARTITIONS, 1)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    registry = CollectorRegistry()
    metrics = WebhookMetrics(registry)
    receipts = Receipts(status_publisher(ProducerTopic(producer, status)), ReceiptMemory())
    removals: list[ProfileUpdate] = []

    async def remove(update: ProfileUpdate) -> None:
        removals.append(update)

    routes = [
        twilio_status_route(
            auth_token=twilio.auth_token,
            public_base_url=base,
            receipts=receipts,
            clock=lambda: NOW,
            webhook_metrics=metrics,
        ),
        bounce_webhook_route(
            publish=remove,
            public_key=load_public_key(signer.public_key_b64),
            clock=lambda: datetime.now(UTC),
            metrics=metrics,
            receipts=receipts,
        ),
    ]
    config = uvicorn.Config(Starlette(routes=routes), log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "uvicorn stopped during start-up"
            await asyncio.sleep(0.02)
        yield Receiver(base, stack, registry, removals)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)
        await producer.stop()


async def statuses(receiver: Receiver, until: int) -> list[tuple[bytes, int, dict[str, Any]]]:
    records = await read_topic(
        receiver.stack.bootstrap, receiver.stack.topic("status"), until=until, timeout=5
    )
    return sorted(
        ((r.key, r.partition, json.loads(r.value)) for r in records),
        key=lambda r: (r[2]["at"], r[2]["outcome"]),
    )


def partition_of(key: bytes) -> int:
    return int(DefaultPartitioner()(key, list(range(PARTITIONS)), list(range(PARTITIONS))))


def refused(receiver: Receiver, provider: str, reason: str) -> float | None:
    labels = {"provider": provider, "reason": reason}
    return receiver.metrics.get_sample_value("herald_webhook_refused_total", labels)


async def test_twilio_callbacks_to_the_url_herald_gave_become_status_records(
    receiver: Receiver, twilio: FakeTwilio
) -> None:
    sender = TwilioSmsSender(
        twilio.account_sid,
        twilio.auth_token,
        sender="+15005550006",
        base_url=twilio.url,
        public_base_url=receiver.base,
    )
    message = SmsNotification(
        notification_id="ntf_sms_1",
        event_id="evt-42",
        event_type="login.code",
        recipient="ada",
        occurred_at=NOW,
        created_at=NOW,
        attempt=2,
        to="+447700900123",
        text="Your code is 123456",
    )
    try:
        before = len(twilio.sends)
        sid = await sender.send(message)
    finally:
        await sender.aclose()
    callback = twilio.sends[before].form()["StatusCallback"]
    assert "447700900123" not in callback
    target = urlsplit(callback)
    path = f"{target.path}?{target.query}"
    validator = RequestValidator(twilio.auth_token)

    def callback_form(status: str, **extra: str) -> dict[str, str]:
        return {"MessageSid": str(sid), "MessageStatus": status, "To": message.to, **extra}

    async with httpx.AsyncClient(base_url=receiver.base, timeout=10) as client:

        async def post(form: dict[str, str], signature: str | None = None) -> int:
            signed = signature if signature is not None else validator.compute_signature(callback, form)
            response = await client.post(path, data=form, headers={"X-Twilio-Signature": signed})
            return response.status_code

        delivered = callback_form("delivered")
        answers = [
            await post(callback_form("sent")),
            await post(delivered),
            await post(delivered),  # Twilio's retry, or a replay
            await post(callback_form("sent")),  # late and weaker
            await post(
                callback_form("failed", ErrorCode="30008"), validator.compute_signature(callback, delivered)
            ),
            await post(delivered, RequestValidator("not-the-token").compute_signature(callback, delivered)),
        ]

    assert answers == [204, 204, 204, 204, 403, 403]
    assert await statuses(receiver, until=2) == [
        (
            b"ada",
            partition_of(b"ada"),
            {
                "notification_id": "ntf_sms_1",
                "event_id": "evt-42",
                "recipient": "ada",
                "channel": "sms",
                "provider": "twilio",
                "outcome": "provider_delivered",
                "attempt": 2,
                "at": NOW.isoformat().replace("+00:00", "Z"),
                "provider_message_id": sid,
            },
        )
    ]
    assert refused(receiver, "twilio", "bad_signature") == 2


async def test_sendgrid_events_carrying_herald_custom_args_become_status_records(
    receiver: Receiver, sendgrid: FakeSendGrid, signer: SendGridSigner
) -> None:
    sender = SendGridEmailSender("SG.test-key", sender="herald@example.com", base_url=sendgrid.url)
    message = EmailNotification(
        notification_id="ntf_mail_1",
        event_id="evt-43",
        event_type="order.shipped",
        recipient="bob",
        occurred_at=NOW,
        created_at=NOW,
        to="bob@example.com",
        subject="Shipped",
        text="Hi",
    )
    try:
        before = len(sendgrid.sends)
        message_id = await sender.send(message)
    finally:
        await sender.aclose()
    custom_args = sendgrid.sends[before].json()["custom_args"]
    at = int(NOW.timestamp())

    def sg_event(kind: str, seconds: int, **extra: Any) -> dict[str, Any]:
        # As SendGrid posts them: its own fields, with the mail's custom args echoed at the top level.
        return {
            "email": "bob@example.com",
            "timestamp": at + seconds,
            "event": kind,
            "sg_event_id": f"sg-{kind}-{seconds}",
            "sg_message_id": f"{message_id}.filter0001",
            **custom_args,
            **extra,
        }

    first = batch(
        sg_event("processed", 0), sg_event("deferred", 1, response="421 try later"), sg_event("delivered", 2)
    )
    second = batch(sg_event("open", 3), sg_event("deferred", 1), sg_event("delivered", 2))  # SendGrid's retry
    now = int(datetime.now(UTC).timestamp())
    async with httpx.AsyncClient(base_url=receiver.base, timeout=10) as client:
        answers = [
            (await client.post(DEFAULT_PATH, content=body, headers=signer.headers(body, now))).status_code
            for body in (first, second)
        ]
        forged = await client.post(DEFAULT_PATH, content=second, headers=signer.headers(first, now))

    assert (answers, forged.status_code) == ([204, 204], 401)

    def record(outcome: str, seconds: int) -> tuple[bytes, int, dict[str, Any]]:
        return (
            b"bob",
            partition_of(b"bob"),
            {
                "notification_id": "ntf_mail_1",
                "event_id": "evt-43",
                "recipient": "bob",
                "channel": "email",
                "provider": "sendgrid",
                "outcome": outcome,
                "attempt": 1,
                "at": datetime.fromtimestamp(at + seconds, UTC).isoformat().replace("+00:00", "Z"),
                "provider_message_id": f"{message_id}.filter0001",
            },
        )

    assert await statuses(receiver, until=4) == [
        record("provider_deferred", 1),
        record("provider_delivered", 2),
        record("opened", 3),
    ]
    assert receiver.removals == []
    assert refused(receiver, "sendgrid", "bad_signature") == 1


# --- against the worker -------------------------------------------------------------------------------------


async def test_the_worker_serves_the_twilio_callback_when_the_public_base_url_is_set(
    stack_factory: Any, twilio: FakeTwilio
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stack: Stack = stack_factory(
        HERALD_WORKER_PORT=str(port),
        HERALD_PUBLIC_BASE_URL=base,
        HERALD_TWILIO_ACCOUNT_SID=twilio.account_sid,
        HERALD_TWILIO_AUTH_TOKEN=twilio.auth_token,
        HERALD_TWILIO_FROM="+15005550006",
        HERALD_TWILIO_BASE_URL=twilio.url,
    )
    process = stack.spawn("worker", "-l", "info", log_name="worker")
    await wait_ready(f"{base}/readyz", process)
    path = f"{STATUS_CALLBACK_PATH}?nid=ntf_sms_9&eid=evt-9&uid=cy&attempt=1"
    form = {"MessageSid": "SM9", "MessageStatus": "undelivered", "ErrorCode": "30003"}
    signature = RequestValidator(twilio.auth_token).compute_signature(f"{base}{path}", form)

    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        forged = await client.post(
            path, data={**form, "ErrorCode": "30005"}, headers={"X-Twilio-Signature": signature}
        )
        taken = await client.post(path, data=form, headers={"X-Twilio-Signature": signature})

    assert (forged.status_code, taken.status_code) == (403, 204)
    records = await read_topic(stack.bootstrap, stack.topic("status"), until=1, timeout=10)
    assert [(r.key, json.loads(r.value)["outcome"], json.loads(r.value)["reason"]) for r in records] == [
        (b"cy", "provider_failed", "unreachable_number")
    ]
