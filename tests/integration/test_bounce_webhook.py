"""The SendGrid bounce webhook over HTTP on a real broker: a signed hard bounce puts the conditional email
removal on the users topic, and (once the worker serves the route) the directory applies it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from adapters.broker.embedded import free_port
from adapters.broker.topics import ensure_topics
from schemas.users import ProfileUpdate
from streams.effects import REVISION
from streams.ops.bounce_webhook import DEFAULT_PATH, WebhookMetrics, bounce_webhook_route, load_public_key
from streams.state.directory import home_partition
from tests.fakes.sendgrid_events import SendGridSigner, batch, bounce, event
from tests.integration.stack import Stack, produce, read_topic, wait_ready

pytestmark = pytest.mark.integration

PARTITIONS = 4  # what Stack gives HERALD_PARTITIONS


@pytest.fixture(scope="module")
def signer() -> SendGridSigner:
    return SendGridSigner()


@dataclass
class Webhook:
    url: str
    stack: Stack
    metrics: CollectorRegistry


@pytest.fixture
async def webhook(stack_factory: Any, signer: SendGridSigner) -> AsyncIterator[Webhook]:
    """The route in a small Starlette app under uvicorn, publishing to the broker with aiokafka (murmur2, like
    the worker's producer), until the worker serves it itself."""
    stack: Stack = stack_factory()
    users = stack.topic("users")
    await ensure_topics(stack.bootstrap, [users], PARTITIONS, 1, compacted={users})
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()

    async def publish(update: ProfileUpdate) -> None:
        await producer.send_and_wait(users, key=update.user_id.encode(), value=update.to_json())

    registry = CollectorRegistry()
    route = bounce_webhook_route(
        publish=publish,
        public_key=load_public_key(signer.public_key_b64),
        clock=lambda: datetime.now(UTC),
        metrics=WebhookMetrics(registry),
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(Starlette(routes=[route]), log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "uvicorn stopped during start-up"
            await asyncio.sleep(0.02)
        yield Webhook(f"http://127.0.0.1:{port}{DEFAULT_PATH}", stack, registry)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)
        await producer.stop()


def now_ts() -> int:
    return int(datetime.now(UTC).timestamp())


async def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(url, content=body, headers=headers, timeout=10)


async def test_a_signed_hard_bounce_puts_the_email_removal_on_the_users_topic(
    webhook: Webhook, signer: SendGridSigner
) -> None:
    users = webhook.stack.topic("users")
    body = batch(
        event("delivered", "bob@example.com", "bob"),
        bounce("ada@example.com", "ada"),
        bounce("cy@example.com", "cy", type="blocked"),
    )
    forged = batch(bounce("bob@example.com", "bob"))

    refused = await post(webhook.url, forged, signer.headers(body, now_ts()))
    accepted = await post(webhook.url, body, signer.headers(body, now_ts()))

    assert (refused.status_code, accepted.status_code) == (401, 204)
    records = await read_topic(webhook.stack.bootstrap, users, until=2, timeout=5)
    assert [(r.key, json.loads(r.value)) for r in records] == [
        (b"ada", {"user_id": "ada", "email": None, "if_email": "ada@example.com"})
    ]
    # Keyed and partitioned like every profile, so the worker that owns ada's profile applies it.
    assert records[0].partition == home_partition("ada", PARTITIONS)
    assert (
        webhook.metrics.get_sample_value(
            "herald_webhook_refused_total", {"provider": "sendgrid", "reason": "bad_signature"}
        )
        == 1
    )


# --- against the worker ---------------------------------------------------------------------------------


async def stored_profiles(stack: Stack) -> dict[str, dict[str, Any]]:
    """The directory's table as its changelog has it: the latest stored profile per user."""
    changelog = f"{stack.env['HERALD_APP_ID']}-users-changelog"
    records = await read_topic(stack.bootstrap, changelog, until=100_000, timeout=2)
    return {json.loads(r.key): json.loads(r.value) for r in records if r.value is not None}


async def eventually_stored(stack: Stack, user_id: str, check: Any, timeout: float = 30) -> dict[str, Any]:
    profile: dict[str, Any] = {}
    for _ in range(int(timeout / 2)):
        profile = (await stored_profiles(stack)).get(user_id, {})
        if check(profile):
            return profile
    raise AssertionError(f"{user_id}'s stored profile never matched: {profile}")


async def test_the_worker_removes_a_bounced_address_but_not_a_changed_one(
    stack_factory: Any, signer: SendGridSigner
) -> None:
    stack: Stack = stack_factory(
        HERALD_WORKER_PORT=str(free_port()), HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY=signer.public_key_b64
    )
    process = stack.spawn("worker", "-l", "info", log_name="worker")
    base = f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}"
    await wait_ready(f"{base}/readyz", process)
    profiles = [
        {"user_id": "ada", "email": "ada@example.com", "locale": "fr"},
        {"user_id": "ben", "email": "ben.new@example.com"},  # changed since the mail that bounced
    ]
    await produce(
        stack.bootstrap,
        stack.topic("users"),
        [(p["user_id"].encode(), json.dumps(p).encode()) for p in profiles],
    )
    await eventually_stored(stack, "ben", lambda p: p.get("email") == "ben.new@example.com")
    await eventually_stored(stack, "ada", lambda p: p.get("email") == "ada@example.com")

    body = batch(bounce("ada@example.com", "ada"), bounce("ben.old@example.com", "ben"))
    headers = signer.headers(body, now_ts())
    response = await post(f"{base}{DEFAULT_PATH}", body, headers)
    replayed = await post(f"{base}{DEFAULT_PATH}", body, headers)

    assert (response.status_code, replayed.status_code) == (204, 409)
    ada = await eventually_stored(stack, "ada", lambda p: "email" not in p)
    # As stored: the profile and the offset of the update that last changed it.
    assert isinstance(ada.pop(REVISION), int)
    assert ada == {"user_id": "ada", "locale": "fr", "timezone": "UTC", "inapp_enabled": True, "devices": []}
    # A later change of ben's, applied after the removal on the same partition, finds his new address kept.
    later = {"user_id": "ben", "display_name": "Ben"}
    await produce(stack.bootstrap, stack.topic("users"), [(b"ben", json.dumps(later).encode())])
    ben = await eventually_stored(stack, "ben", lambda p: p.get("display_name") == "Ben")
    assert ben["email"] == "ben.new@example.com"
