"""The preference center end to end, as users run Herald (a worker and a gateway, processes of their own, on
the real broker): a user turns email off for a category over HTTP, and through the demo page in headless
Chromium, and the next event of that category sends no email while other categories still do."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.broker.embedded import free_port
from adapters.email.sink import SmtpSink
from gateway.auth import issue_token
from schemas.status import DeliveryStatus
from tests.integration.browser import Browser
from tests.integration.stack import Stack, produce, read_topic, wait_for_metric, wait_ready

pytestmark = pytest.mark.integration

SECRET = "preference-center-" + "x" * 48
TIMEOUT = 30.0
USERS = ("alice", "bob", "carol", "dave")

# Two ordinary categories by email, and a critical one (security is critical by default).
RULES = """
rules:
  - match: order.shipped
    category: orders
    channels:
      inapp: {template: order_shipped}
      email: {template: order_shipped}
  - match: order.delivered
    category: deliveries
    channels:
      email: {template: order_shipped}
  - match: password.reset
    category: security
    channels:
      email: {template: password_reset}
"""


@pytest.fixture(scope="module")
def stack(stack_factory: Any, smtp_server: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    rules = Path(tmp_path_factory.mktemp("rules")) / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    host, port = smtp_server.address
    stack: Stack = stack_factory(
        HERALD_RULES_FILE=str(rules),
        HERALD_SMTP_HOST=host,
        HERALD_SMTP_PORT=str(port),
        HERALD_JWT_SECRET=SECRET,
        HERALD_WORKER_PORT=str(free_port()),
        HERALD_GATEWAY_PORT=str(free_port()),
    )
    worker = stack.spawn("worker", "-l", "info", log_name="worker")
    gateway = stack.spawn("gateway", log_name="gateway")
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{stack.env['HERALD_WORKER_PORT']}/readyz", worker))
        asyncio.run(wait_ready(f"{_gateway(stack)}/readyz", gateway, timeout=90))
        profiles = [{"user_id": user, "email": f"{user}@example.com"} for user in USERS]
        asyncio.run(
            produce(
                stack.bootstrap,
                stack.topic("users"),
                [(p["user_id"].encode(), json.dumps(p).encode()) for p in profiles],
            )
        )
        asyncio.run(wait_for_metric(stack, "herald_profiles_applied_total", len(USERS)))
    except Exception:
        print(stack.log("worker")[-5000:], stack.log("gateway")[-3000:])
        raise
    return stack


def _gateway(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.env['HERALD_GATEWAY_PORT']}"


def _auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, user, 300)}"}


def _event(event_id: str, kind: str, user: str, order: str) -> tuple[bytes, bytes]:
    data = {"order_id": order, "carrier": "DHL", "items": ["Kettle"], "reset_url": "https://example.test/r"}
    document = {
        "event_id": event_id,
        "type": kind,
        "occurred_at": "2026-11-24T10:00:00Z",
        "recipients": [user],
        "data": data,
    }
    return user.encode(), json.dumps(document).encode()


def _email(view: dict[str, Any], category: str) -> dict[str, Any]:
    found = next(c for c in view["categories"] if c["category"] == category)
    channel: dict[str, Any] = next(c for c in found["channels"] if c["channel"] == "email")
    return channel


async def _view(stack: Stack, user: str) -> dict[str, Any]:
    """The user's preferences as the worker holds them, once the worker is ready to answer."""
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + TIMEOUT
        while True:
            response = await http.get(f"{_gateway(stack)}/preferences", headers=_auth(user))
            if response.status_code != 503 or time.monotonic() > deadline:
                assert response.status_code == 200, response.text
                view: dict[str, Any] = response.json()
                return view
            await asyncio.sleep(0.1)


async def _post(stack: Stack, user: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{_gateway(stack)}/preferences", headers=_auth(user), json=body)


async def _applied(stack: Stack, user: str, category: str, choice: bool) -> None:
    """Until the worker has applied the change (routing reads the same table)."""
    async with asyncio.timeout(TIMEOUT):
        while _email(await _view(stack, user), category)["choice"] is not choice:
            await asyncio.sleep(0.1)


async def _statuses(stack: Stack, user: str, *wanted: tuple[str, str, str]) -> list[DeliveryStatus]:
    """The user's statuses, once one of each (event id, channel, outcome) wanted is there."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        records = await read_topic(stack.bootstrap, stack.topic("status"), until=100_000, timeout=2)
        statuses = [DeliveryStatus.model_validate_json(r.value) for r in records if r.key == user.encode()]
        seen = {(s.event_id, s.channel.value, s.outcome) for s in statuses}
        if set(wanted) <= seen or time.monotonic() > deadline:
            assert set(wanted) <= seen, sorted(seen)
            return statuses


async def _history(stack: Stack, user: str) -> list[dict[str, Any]]:
    """The user's consent history, once it has a change."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            records = await read_topic(
                stack.bootstrap, stack.topic("preferences.history"), until=100, timeout=1
            )
            changes = [json.loads(r.value) for r in records if r.key == user.encode()]
            if changes:
                return changes


async def _mail(sink: SmtpSink, to: str, subject: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not any(m["To"] == to and str(m["Subject"]) == subject for m in sink.messages):
            await asyncio.sleep(0.1)


def _subjects(sink: SmtpSink, to: str) -> list[str]:
    return sorted(str(m["Subject"]) for m in sink.messages if m["To"] == to)


async def test_email_turned_off_for_a_category_over_http_sends_none_while_other_categories_still_send(
    stack: Stack, smtp_server: SmtpSink
) -> None:
    before = await _view(stack, "alice")
    assert [(c["category"], c["locked"]) for c in before["categories"]] == [
        ("deliveries", False),
        ("orders", False),
        ("security", True),
    ]
    assert _email(before, "orders") == {"channel": "email", "locked": False, "enabled": True, "choice": None}

    answer = await _post(stack, "alice", {"categories": {"orders": {"email": False}}})
    assert answer.status_code == 200, answer.text
    assert _email(answer.json(), "orders") == {
        "channel": "email",
        "locked": False,
        "enabled": False,
        "choice": False,
    }
    await _applied(stack, "alice", "orders", False)

    await produce(
        stack.bootstrap,
        stack.topic("events"),
        [
            _event("pc-1", "order.shipped", "alice", "A-1"),  # orders: in-app only now
            _event("pc-2", "order.delivered", "alice", "A-2"),  # deliveries: email still
            _event("pc-3", "password.reset", "alice", "A-3"),  # security: always
        ],
    )
    await _mail(smtp_server, "alice@example.com", "Your order A-2 has shipped")
    await _mail(smtp_server, "alice@example.com", "Reset your password")
    statuses = await _statuses(stack, "alice", ("pc-1", "email", "skipped"), ("pc-1", "inapp", "delivered"))
    [skipped] = [s for s in statuses if (s.event_id, s.channel.value) == ("pc-1", "email")]
    assert skipped.reason == "opted_out"
    assert _subjects(smtp_server, "alice@example.com") == [
        "Reset your password",
        "Your order A-2 has shipped",
    ]

    # The change went the CLI's way: the consent history has it, from the preference center.
    history = await _history(stack, "alice")
    assert [(h["source"], h["update"]) for h in history] == [
        ("preference_center", {"user_id": "alice", "categories": {"orders": {"email": False}}})
    ]


async def test_a_user_reaches_only_their_own_preferences_and_cannot_turn_off_a_critical_category(
    stack: Stack,
) -> None:
    naming_another = await _post(
        stack, "carol", {"user_id": "dave", "categories": {"orders": {"email": False}}}
    )
    assert (naming_another.status_code, naming_another.json()["error"]) == (400, "invalid_request")
    locked = await _post(stack, "carol", {"categories": {"security": {"email": False}}})
    assert locked.status_code == 403
    assert (locked.json()["error"], locked.json()["choices"]) == ("locked", ["security:email"])

    assert (await _post(stack, "carol", {"categories": {"deliveries": {"email": False}}})).status_code == 200
    await _applied(stack, "carol", "deliveries", False)
    # Carol's change is hers alone, and her critical email is still on.
    dave = await _view(stack, "dave")
    assert _email(dave, "deliveries")["enabled"] is True and _email(dave, "deliveries")["choice"] is None
    assert _email(await _view(stack, "carol"), "security") == {
        "channel": "email",
        "locked": True,
        "enabled": True,
        "choice": None,
    }
    async with httpx.AsyncClient() as http:
        anonymous = await http.get(f"{_gateway(stack)}/preferences")
    assert anonymous.status_code == 401


async def test_email_turned_off_on_the_demo_page_sends_none_for_that_category(
    stack: Stack, smtp_server: SmtpSink, browser: Browser
) -> None:
    await browser.open(f"{_gateway(stack)}/demo")
    token = issue_token(SECRET, "bob", 300)
    await browser.eval(
        f"document.getElementById('token').value = {json.dumps(token)};"
        "document.getElementById('connect').click();"
    )
    await browser.wait_for("document.getElementById('status').textContent", "connected as bob", TIMEOUT)
    box = "document.getElementById('pref-deliveries-email')"
    await browser.wait_for(f"{box} !== null && {box}.checked", True, TIMEOUT)
    assert await browser.eval("document.getElementById('pref-security-email').disabled") is True
    assert await browser.eval("document.getElementById('pref-orders-email').disabled") is False

    await browser.eval(f"{box}.click()")
    await browser.wait_for("document.getElementById('pref-status').textContent", "saved", TIMEOUT)
    assert await browser.eval(f"{box}.checked") is False
    await _applied(stack, "bob", "deliveries", False)
    # After a reload the page shows what the worker holds.
    await browser.open(f"{_gateway(stack)}/demo")
    await browser.eval(
        f"document.getElementById('token').value = {json.dumps(token)};"
        "document.getElementById('connect').click();"
    )
    await browser.wait_for(f"{box} !== null && !{box}.checked", True, TIMEOUT)

    await produce(
        stack.bootstrap,
        stack.topic("events"),
        [
            _event("pc-4", "order.delivered", "bob", "B-4"),  # deliveries: no email now
            _event("pc-5", "order.shipped", "bob", "B-5"),  # orders: email still
        ],
    )
    await _mail(smtp_server, "bob@example.com", "Your order B-5 has shipped")
    statuses = await _statuses(stack, "bob", ("pc-4", "email", "skipped"))
    [skipped] = [s for s in statuses if (s.event_id, s.channel.value) == ("pc-4", "email")]
    assert skipped.reason == "opted_out"
    assert _subjects(smtp_server, "bob@example.com") == ["Your order B-5 has shipped"]
