"""The preference center on the gateway, over real loopback sockets and HTTP: the owner is the fake worker
endpoint of `test_gateway_sockets` (its rules offer orders in-app and by email, and critical security), the
preferences topic a recording writer that stores each change as the worker would."""

from __future__ import annotations

import json
from typing import Any

from gateway.preferences_writer import HEADERS
from schemas.preferences import SOURCE_HEADER
from tests.unit import test_gateway_sockets as sockets
from tests.unit.test_gateway_sockets import Gateway, _connect, _frame, _http, _send, _token

start_gateway = sockets.start_gateway
gateway = sockets.gateway


def choices(view: dict[str, Any]) -> dict[str, dict[str, tuple[bool, bool, bool | None]]]:
    """category → channel → (locked, enabled, choice)."""
    return {
        category["category"]: {
            c["channel"]: (c["locked"], c["enabled"], c["choice"]) for c in category["channels"]
        }
        for category in view["categories"]
    }


async def _post(gateway: Gateway, user: str, body: dict[str, Any]) -> tuple[int, Any]:
    status, text = await _http(
        gateway.port, "POST", "/preferences", token=_token(user), body=json.dumps(body).encode()
    )
    return status, json.loads(text) if text else None


async def _get(gateway: Gateway, user: str) -> tuple[int, Any]:
    status, text = await _http(gateway.port, "GET", "/preferences", token=_token(user))
    return status, json.loads(text)


async def test_a_user_reads_the_offered_categories_with_their_choices_and_locks(gateway: Gateway) -> None:
    status, view = await _get(gateway, "alice")
    assert status == 200
    assert view == {
        "muted": False,
        "channels": {},
        "quiet_hours": {},
        "categories": [
            {
                "category": "orders",
                "locked": False,
                "channels": [
                    {"channel": "inapp", "locked": False, "enabled": True, "choice": None},
                    {"channel": "email", "locked": False, "enabled": True, "choice": None},
                ],
            },
            {
                "category": "security",
                "locked": True,
                "channels": [
                    {"channel": "email", "locked": True, "enabled": True, "choice": None},
                    {"channel": "sms", "locked": True, "enabled": True, "choice": None},
                ],
            },
        ],
    }
    assert gateway.owner.requests[-1].user_id == "alice"


async def test_turning_email_off_for_a_category_writes_the_users_own_record_marked_preference_center(
    gateway: Gateway,
) -> None:
    status, view = await _post(gateway, "alice", {"categories": {"orders": {"email": False}}})
    assert status == 200
    assert choices(view)["orders"] == {"inapp": (False, True, None), "email": (False, False, False)}
    [update] = gateway.preferences.written
    assert json.loads(update.to_json()) == {"user_id": "alice", "categories": {"orders": {"email": False}}}
    assert HEADERS == [(SOURCE_HEADER, b"preference_center")]
    assert gateway.sample("herald_gateway_preference_changes_total") == 1
    # Once applied, it is what the owner reads back; another user's stays as it was.
    assert choices((await _get(gateway, "alice"))[1])["orders"]["email"] == (False, False, False)
    assert choices((await _get(gateway, "bob"))[1])["orders"]["email"] == (False, True, None)


async def test_a_user_can_neither_name_nor_reach_another_user(gateway: Gateway) -> None:
    status, body = await _post(gateway, "alice", {"user_id": "bob", "muted": True})
    assert (status, body) == (400, {"error": "invalid_request", "fields": ["user_id"]})
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        reply = await _send(ws, type="set_preferences", id="p1", changes={"user_id": "bob", "muted": True})
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "invalid_frame", "p1")
        reply = await _send(ws, type="get_preferences", user_id="bob")
        assert (reply["type"], reply["code"]) == ("error", "invalid_frame")
        # And what it may do is always about the token's user.
        await _send(ws, type="set_preferences", changes={"muted": True})
    assert [update.user_id for update in gateway.preferences.written] == ["alice"]
    assert {request.user_id for request in gateway.owner.requests} == {"alice"}
    assert (await _get(gateway, "bob"))[1]["muted"] is False


async def test_a_critical_category_cannot_be_turned_off(gateway: Gateway) -> None:
    status, body = await _post(gateway, "alice", {"categories": {"security": {"email": False}}})
    assert status == 403
    assert body["error"] == "locked" and body["choices"] == ["security:email"]
    assert "always sent" in body["message"]
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        reply = await _send(
            ws, type="set_preferences", id="p2", changes={"categories": {"security": {"sms": False}}}
        )
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "locked", "p2")
        assert "security:sms" in reply["message"]
        # The socket carries on.
        assert (await _send(ws, type="ping"))["type"] == "pong"
    assert gateway.preferences.written == []
    assert choices((await _get(gateway, "alice"))[1])["security"]["email"] == (True, True, None)


async def test_changes_the_rules_do_not_offer_or_that_do_not_validate_are_refused(gateway: Gateway) -> None:
    status, body = await _post(gateway, "alice", {"categories": {"marketing": {"email": False}}})
    assert (status, body["error"], body["choices"]) == (400, "not_offered", ["marketing:email"])
    for bad, fields in (
        ({}, ["(body)"]),
        ({"categories": {"orders": {"fax": False}}}, ["categories.orders.fax.[key]"]),
        ({"quiet_hours": {"sat": {"start": "23:00", "end": "23:00"}}}, ["quiet_hours.sat"]),
    ):
        assert await _post(gateway, "alice", bad) == (400, {"error": "invalid_request", "fields": fields})
    assert (await _http(gateway.port, "POST", "/preferences", token=_token("alice"), body=b"{"))[0] == 400
    assert gateway.preferences.written == []


async def test_the_socket_reads_and_changes_preferences_quiet_hours_and_mute_included(
    gateway: Gateway,
) -> None:
    async with _connect(gateway, "alice") as ws:
        await _frame(ws)
        got = await _send(ws, type="get_preferences", id="g")
        assert (got["type"], got["id"]) == ("preferences", "g")
        assert [c["category"] for c in got["preferences"]["categories"]] == ["orders", "security"]
        changed = await _send(
            ws,
            type="set_preferences",
            id="s",
            changes={
                "muted": True,
                "channels": {"sms": False},
                "quiet_hours": {"sat": {"start": "23:00", "end": "09:00"}},
            },
        )
        assert (changed["type"], changed["id"]) == ("preferences", "s")
        view = changed["preferences"]
        assert view["muted"] is True and view["channels"] == {"sms": False}
        assert view["quiet_hours"] == {"sat": {"start": "23:00:00", "end": "09:00:00"}}
        # Critical SMS is sent regardless of the general SMS opt-out.
        assert choices(view)["security"]["sms"] == (True, True, None)
        cleared = await _send(ws, type="set_preferences", changes={"quiet_hours": None, "muted": False})
        assert cleared["preferences"]["quiet_hours"] == {} and cleared["preferences"]["muted"] is False


async def test_without_the_owner_or_the_broker_preferences_are_unavailable(gateway: Gateway) -> None:
    gateway.owner.down = True
    assert await _get(gateway, "alice") == (503, {"error": "unavailable"})
    async with _connect(gateway, "alice") as ws:
        # (connecting asks the owner for the inbox too: let it answer that)
        gateway.owner.down = False
        await _frame(ws)
        gateway.owner.down = True
        reply = await _send(ws, type="get_preferences", id="g")
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "unavailable", "g")
        gateway.owner.down = False
        gateway.preferences.down = True
        reply = await _send(ws, type="set_preferences", changes={"muted": True})
        assert (reply["type"], reply["code"]) == ("error", "unavailable")
    status, _ = await _post(gateway, "alice", {"muted": True})
    assert status == 503
    assert gateway.sample("herald_gateway_preference_changes_total") == 0


async def test_preferences_over_http_take_the_token_from_the_header_only(gateway: Gateway) -> None:
    status, body = await _http(gateway.port, "GET", f"/preferences?token={_token('alice')}")
    assert (status, json.loads(body)) == (401, {"error": "missing_token"})
    assert (await _http(gateway.port, "POST", "/preferences", body=b'{"muted":true}'))[0] == 401
    assert (await _http(gateway.port, "GET", "/preferences", token=_token("alice")[:-3] + "abc"))[0] == 401
    assert gateway.preferences.written == [] and gateway.owner.requests == []
