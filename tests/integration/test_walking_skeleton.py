"""A domain event in; an in-app WebSocket message, an email and DLQ records out — on a real broker."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest
import websockets

from adapters.broker.embedded import free_port
from adapters.email.sink import SmtpSink
from gateway.auth import issue_token
from schemas.deadletter import DeadLetter
from schemas.status import DeliveryStatus
from tests.integration.stack import Stack, produce, read_topic, wait_for_metric, wait_ready

pytestmark = pytest.mark.integration

SECRET = "test-secret-" + "x" * 32


def event(event_id: str, recipients: list[str], *, type_: str = "order.shipped", order: str = "A-1") -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "type": type_,
            "occurred_at": "2026-11-24T10:00:00Z",
            "recipients": recipients,
            "data": {"order_id": order, "carrier": "DHL", "items": ["Kettle", "Tea"]},
        }
    ).encode()


@pytest.fixture(scope="module")
def running(stack_factory: Any, smtp_server: SmtpSink) -> Stack:
    host, port = smtp_server.address
    stack: Stack = stack_factory(
        HERALD_SMTP_HOST=host,
        HERALD_SMTP_PORT=str(port),
        HERALD_JWT_SECRET=SECRET,
        HERALD_WORKER_PORT=str(free_port()),
        HERALD_GATEWAY_PORT=str(free_port()),
    )
    profiles = [
        {"user_id": "alice", "email": "alice@example.com", "display_name": "Alice"},
        {"user_id": "bob", "email": "bob@example.com", "locale": "fr-CA"},
    ]
    worker = stack.spawn("worker", "-l", "info", log_name="worker")
    gateway = stack.spawn("gateway", log_name="gateway")
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", worker))
        asyncio.run(wait_ready(f"http://127.0.0.1:{stack.env['HERALD_GATEWAY_PORT']}/readyz", gateway))
    except Exception:
        print(stack.log("worker")[-5000:], stack.log("gateway")[-3000:])
        raise
    asyncio.run(
        produce(
            stack.bootstrap,
            stack.topic("users"),
            [(p["user_id"].encode(), json.dumps(p).encode()) for p in profiles],
        )
    )
    # Events for a user must not overtake the user's profile: wait until the directory holds both.
    asyncio.run(wait_for_metric(stack, "herald_profiles_applied_total", 2))
    return stack


async def connect(stack: Stack, user: str) -> Any:
    token = issue_token(SECRET, user, 300)
    ws = await websockets.connect(f"ws://127.0.0.1:{stack.env['HERALD_GATEWAY_PORT']}/ws?token={token}")
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert welcome["type"] == "welcome" and welcome["user_id"] == user
    return ws


async def next_notification(ws: Any, timeout: float) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if frame["type"] == "notification":
            return frame["notification"]  # type: ignore[no-any-return]


async def wait_for_mail(sink: SmtpSink, to: str, count: int, timeout: float = 30.0) -> list[Any]:
    for _ in range(int(timeout / 0.1)):
        found = [m for m in sink.messages if m["To"] == to]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"{to} received {len([m for m in sink.messages if m['To'] == to])} of {count} emails"
    )


async def test_event_reaches_websocket_and_smtp_and_bad_events_reach_the_dlq(
    running: Stack, smtp_server: SmtpSink
) -> None:
    stack = running
    alice_phone = await connect(stack, "alice")
    alice_laptop = await connect(stack, "alice")
    bob = await connect(stack, "bob")

    not_json = b"{this is not json"
    no_rule = event("e-norule", ["alice"], type_="invoice.paid")
    await produce(
        stack.bootstrap,
        stack.topic("events"),
        [
            (b"alice", not_json),
            (b"alice", event("e-1", ["alice"], order="A-1")),
            (b"alice", no_rule),
            (b"alice", event("e-2", ["alice"], order="A-2")),
        ],
    )

    # (a) every open connection of alice receives the rendered in-app messages, in order
    for ws in (alice_phone, alice_laptop):
        first = await next_notification(ws, 60)
        second = await next_notification(ws, 30)
        assert first["title"] == "Your order A-1 has shipped"
        assert first["body"] == "DHL is on its way with 2 item(s)."
        assert first["action_url"] == "https://shop.example.com/orders/A-1"
        assert first["recipient"] == "alice" and first["event_id"] == "e-1"
        assert second["title"] == "Your order A-2 has shipped"
    # … and bob's client receives none of alice's
    with pytest.raises(TimeoutError):
        await next_notification(bob, 1.5)

    # (b) the SMTP server received alice's emails with the rendered subject and body
    mails = await wait_for_mail(smtp_server, "alice@example.com", 2)
    subjects = sorted(str(m["Subject"]) for m in mails)
    assert subjects == ["Your order A-1 has shipped", "Your order A-2 has shipped"]
    text = mails[0].get_body(preferencelist=("plain",)).get_content()
    assert "Hello Alice" in text and "- Kettle" in text
    html = mails[0].get_body(preferencelist=("html",)).get_content()
    assert "<b>A-" in html
    assert not [m for m in smtp_server.messages if m["To"] == "bob@example.com"]

    # (c) the malformed and unroutable events are on the DLQ with their reasons and original bytes
    records = await read_topic(stack.bootstrap, stack.topic("dlq"), until=2)
    letters = [DeadLetter.model_validate_json(r.value) for r in records]
    by_reason = {letter.reason: letter for letter in letters}
    assert set(by_reason) == {"invalid_event", "no_rule"}, [(x.stage, x.reason, x.detail) for x in letters]
    assert base64.b64decode(by_reason["invalid_event"].original_b64) == not_json
    assert by_reason["invalid_event"].topic == stack.topic("events")
    assert base64.b64decode(by_reason["no_rule"].original_b64) == no_rule
    assert "invoice.paid" in by_reason["no_rule"].detail

    # every delivered email has a status record
    statuses = [
        DeliveryStatus.model_validate_json(r.value)
        for r in await read_topic(stack.bootstrap, stack.topic("status"), until=2)
    ]
    delivered = [s for s in statuses if s.outcome == "delivered" and s.channel == "email"]
    assert {s.event_id for s in delivered} == {"e-1", "e-2"}

    for ws in (alice_phone, alice_laptop, bob):
        await ws.close()


async def test_unknown_recipient_is_dead_lettered_and_counted(running: Stack) -> None:
    stack = running
    await produce(stack.bootstrap, stack.topic("events"), [(b"zed", event("e-zed", ["zed"]))])
    for _ in range(100):
        letters = [
            DeadLetter.model_validate_json(r.value)
            for r in await read_topic(stack.bootstrap, stack.topic("dlq"), until=3, timeout=5)
        ]
        if any(letter.reason == "unknown_user" for letter in letters):
            break
    else:
        raise AssertionError("no unknown_user dead letter")
    metrics = httpx.get(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/metrics").text
    assert 'herald_dead_letters_total{reason="unknown_user",stage="route"} 1.0' in metrics
