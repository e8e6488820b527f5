"""Attacks on a real gateway process over real sockets: forged, expired and unsigned tokens, one user reaching
for another's inbox (socket and HTTP), oversized frames, floods, slow-loris clients, and template syntax in
event data. Each is refused with its documented close code or status, nothing of the victim's reaches the
attacker, and the gateway's log holds no token or secret."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.auth import issue_token
from schemas.channels import Channel
from schemas.notifications import InAppNotification
from tests.reliability import profiles
from tests.reliability.gateway_process import JWT_SECRET, Gateway, start_gateway, token
from tests.reliability.harness import Deployment, Outputs, produce_all
from tests.reliability.invariants import Figures, check, expected_notifications
from tests.reliability.ws_clients import (
    TIMEOUT,
    Listener,
    RawClient,
    client_frame,
    close_code_of,
    handshake_request,
    server_frames,
    wait_for,
)


def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _unsigned(user_id: str, alg: str = "none") -> str:
    return f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64({'sub': user_id, 'exp': int(time.time()) + 600})}."


def _tampered(user_id: str, victim: str) -> str:
    """A valid token for `user_id` whose payload was rewritten to name `victim`, signature kept."""
    header, _, signature = token(user_id).split(".")
    payload = _b64({"sub": victim, "exp": int(time.time()) + 600})
    return f"{header}.{payload}.{signature}"


def _bad_tokens(user_id: str, victim: str) -> list[tuple[str, str | None, int, str]]:
    """(attack, token, WebSocket close code, reason); HTTP answers each with 401 and the same reason."""
    now = int(time.time())
    return [
        ("no token", None, 4001, "missing_token"),
        ("not a JWT", "not-a-jwt", 4002, "invalid_token"),
        ("bad signature", issue_token("another-secret-" + "k" * 40, user_id, 600), 4002, "invalid_token"),
        ("alg: none", _unsigned(user_id), 4002, "invalid_token"),
        ("alg: None", _unsigned(user_id, "None"), 4002, "invalid_token"),
        (
            "alg: HS512 (not configured)",
            issue_token(JWT_SECRET, user_id, 600, algorithm="HS512"),
            4002,
            "invalid_token",
        ),
        ("payload rewritten to the victim", _tampered(user_id, victim), 4002, "invalid_token"),
        ("no sub", issue_token(JWT_SECRET, "", 600), 4002, "invalid_token"),
        ("no exp", _signed_without_exp(user_id), 4002, "invalid_token"),
        ("expired", issue_token(JWT_SECRET, user_id, -30, now=now), 4003, "expired_token"),
    ]


def _signed_without_exp(user_id: str) -> str:
    import jwt

    return jwt.encode({"sub": user_id}, JWT_SECRET, algorithm="HS256")


def _notification(recipient: str, title: str, body: str) -> InAppNotification:
    now = datetime.now(UTC)
    return InAppNotification(
        notification_id=f"ntf_{uuid.uuid4().hex}",
        event_id=f"evt_{uuid.uuid4().hex[:8]}",
        event_type="order.shipped",
        recipient=recipient,
        occurred_at=now,
        created_at=now,
        title=title,
        body=body,
    )


async def _seed(deployment: Deployment, gateway: Gateway, *notifications: InAppNotification) -> None:
    await produce_all(
        deployment.bootstrap,
        deployment.stack.topic("deliver.inapp"),
        [(n.recipient.encode(), n.to_json()) for n in notifications],
    )
    # Kept by the worker (the gateway keeps nothing): each test has a deployment of its own.
    await deployment.wait_metric("worker-1", "herald_inbox_stored_total", len(notifications), timeout=TIMEOUT)


def _leaks(received: list[str], secrets: list[str]) -> list[str]:
    return [f"{s[:16]}… in {r[:120]}" for r in received for s in secrets if s in r]


def tokens_in_log(gateway: Gateway, tokens: list[str]) -> list[str]:
    text = gateway.log_file.read_text(errors="replace")
    found = [t[:16] + "…" for t in tokens if t and t in text]
    # The signature part alone is enough to replay a token; look for it too.
    found += [
        t.split(".")[-1][:12] + "…"
        for t in tokens
        if t.count(".") == 2 and len(t.split(".")[-1]) > 8 and t.split(".")[-1] in text
    ]
    if JWT_SECRET in text:
        found.append("HERALD_JWT_SECRET")
    return found


async def test_missing_forged_unsigned_and_expired_tokens_are_refused(
    deployment: Deployment, report: Any
) -> None:
    gateway = await start_gateway(deployment)
    attacker, victim = f"mallory-{deployment.tag}", f"victim-{deployment.tag}"
    secret_title = f"victim-secret-{uuid.uuid4().hex}"
    await _seed(deployment, gateway, _notification(victim, secret_title, "for the victim's eyes only"))
    received: list[str] = []
    outcomes: dict[str, Any] = {}
    used: list[str] = []
    for attack, bad, code, reason in _bad_tokens(attacker, victim):
        used += [bad] if bad else []
        # Over the socket, by header and by query string (the form browsers use).
        forms = [({"Authorization": f"Bearer {bad}"} if bad else {}, "")]
        if bad:
            forms.append(({}, f"?token={bad}"))
        for headers, query in forms:
            async with connect(gateway.ws_url + query, additional_headers=headers) as ws:
                try:
                    while True:
                        received.append(str(await asyncio.wait_for(ws.recv(), TIMEOUT)))
                except ConnectionClosed:
                    pass
                outcomes[f"ws {attack}{' (query)' if query else ''}"] = (ws.close_code, ws.close_reason)
                assert (ws.close_code, ws.close_reason) == (code, reason), attack
        # Over HTTP, on each endpoint.
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            auth = {"Authorization": f"Bearer {bad}"} if bad else {}
            for method, path in (
                ("GET", "/inbox"),
                ("GET", "/inbox/unread"),
                ("POST", "/inbox/mark_all_read"),
            ):
                response = await http.request(method, path, headers=auth)
                received.append(response.text)
                outcomes[f"http {method} {path} {attack}"] = response.status_code
                assert response.status_code == 401, (attack, path, response.text)
                assert response.json() == {"error": reason}, (attack, path)
    # A valid token in the URL is not accepted over HTTP (it would end up in proxies' logs).
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        response = await http.get("/inbox", params={"token": token(victim)})
    received.append(response.text)
    assert (response.status_code, response.json()) == (401, {"error": "missing_token"})
    used.append(token(victim))

    # The victim's own token still works, and the attempts changed nothing.
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        mine = await http.get("/inbox/unread", headers={"Authorization": f"Bearer {token(victim)}"})
    assert mine.json() == {"unread": 1}
    leaks = _leaks(received, [secret_title, victim])
    in_log = tokens_in_log(gateway, used)
    failures = await gateway.metric("herald_gateway_auth_failures_total")
    report(
        Figures(
            case="security: tokens",
            events=0,
            expected=0,
            delivered=0,
            dead_lettered=0,
            lost=0,
            duplicated=0,
            duplicates_explained=0,
            unexpected=len(leaks),
            delivered_and_dead_lettered=0,
            malformed_dead_letters=0,
            inapp_topic_replays=0,
            dlq_reasons={},
            hostile_inputs=len(outcomes) + 1,
            notes={
                "refused": len(outcomes) + 1,
                "auth_failures_metric": failures,
                "leaks": len(leaks),
                "tokens_in_log": len(in_log),
            },
        )
    )
    assert not leaks, leaks
    assert not in_log, f"tokens or the secret in the gateway's log: {in_log}"


def _figures(case: str, tried: int, refused: int, leaks: list[str], **notes: Any) -> Figures:
    return Figures(
        case=case,
        events=0,
        expected=0,
        delivered=0,
        dead_lettered=0,
        lost=0,
        duplicated=0,
        duplicates_explained=0,
        unexpected=len(leaks),
        delivered_and_dead_lettered=0,
        malformed_dead_letters=0,
        inapp_topic_replays=0,
        dlq_reasons={},
        hostile_inputs=tried,
        notes={"refused": refused, "leaks": len(leaks), **notes},
    )


async def test_a_token_for_one_user_never_reaches_another_users_inbox(
    deployment: Deployment, report: Any
) -> None:
    gateway = await start_gateway(deployment)
    attacker, victim = f"mallory-{deployment.tag}", f"victim-{deployment.tag}"
    marker = f"victim-secret-{uuid.uuid4().hex}"
    theirs = [_notification(victim, f"{marker} {n}", f"{marker} body") for n in range(5)]
    mine = [_notification(attacker, f"mine {n}", "attacker's own") for n in range(3)]
    await _seed(deployment, gateway, *theirs, *mine)
    their_ids = [n.notification_id for n in theirs]
    secrets = [marker, victim, *their_ids]
    attacks: dict[str, Any] = {}

    # Over the socket: the identity is the token's; query parameters and frame fields cannot change it.
    listeners = []
    for query in (f"?user_id={victim}", f"?user={victim}", f"?sub={victim}", f"?since={their_ids[2]}"):
        listener = Listener(attacker)
        # Listener.open adds `since` itself; the other parameters go on the URL as they are.
        since = query.removeprefix("?since=") if query.startswith("?since=") else None
        welcome = await listener.open(gateway.ws_url + ("" if since else query), token(attacker), since=since)
        attacks[f"ws {query}"] = (welcome["user_id"], welcome["unread"], welcome.get("recovered"))
        assert (welcome["user_id"], welcome["unread"]) == (attacker, 3), query
        if "since" in query:
            assert welcome["recovered"] is False
        listeners.append(listener)
    ws = listeners[0]
    frames = [
        {"type": "list", "id": "l1", "user_id": victim},
        {"type": "list", "id": "l2", "before": their_ids[4], "limit": 100},
        {"type": "list", "id": "l3", "archived": True, "limit": 100},
        {"type": "mark_read", "id": "m1", "ids": their_ids},
        {"type": "archive", "id": "m2", "ids": their_ids},
        {"type": "mark_unread", "id": "m3", "ids": their_ids},
        {"type": "mark_all_read", "id": "m4", "user_id": victim},
        {"type": "refresh", "id": "r1", "token": token(victim)},
        {"type": "refresh", "id": "r2", "token": _tampered(attacker, victim)},
    ]
    for frame in frames:
        await ws.send(**frame)
    await wait_for(lambda: {f.get("id") for f in ws.frames} >= {f["id"] for f in frames})
    replies = {f["id"]: f for f in ws.frames if f.get("id")}
    for frame in frames:
        attacks[f"ws frame {frame['type']} {frame['id']}"] = replies[frame["id"]]["type"]
    assert replies["l1"] == {
        "type": "error",
        "v": 1,
        "id": "l1",
        "code": "invalid_frame",
        "message": replies["l1"]["message"],
    }
    assert replies["l2"]["type"] == "inbox" and replies["l2"]["items"] == []
    assert replies["l3"]["type"] == "inbox" and replies["l3"]["items"] == []
    assert [replies[i]["type"] for i in ("m1", "m2", "m3")] == ["ack"] * 3
    assert replies["m4"]["code"] == "invalid_frame"
    assert (replies["r1"]["code"], replies["r2"]["code"]) == ("invalid_token", "invalid_token")

    # Over HTTP with the attacker's token.
    bearer = {"Authorization": f"Bearer {token(attacker)}"}
    bodies: list[str] = []
    async with httpx.AsyncClient(base_url=gateway.http_url, headers=bearer) as http:
        requests: list[tuple[str, str, dict[str, Any], int]] = [
            ("GET", f"/inbox?user_id={victim}", {}, 400),
            ("GET", f"/inbox?before={their_ids[4]}&limit=100", {}, 200),
            ("GET", f"/inbox/unread?user_id={victim}", {}, 200),
            ("POST", "/inbox/mark_read", {"ids": their_ids}, 200),
            ("POST", "/inbox/archive", {"ids": their_ids}, 200),
            ("POST", "/inbox/archive", {"ids": their_ids, "user_id": victim}, 400),
            ("POST", f"/inbox/mark_read?user_id={victim}", {"ids": their_ids}, 200),
        ]
        for method, path, body, status in requests:
            response = await http.request(method, path, json=body if body else None)
            bodies.append(response.text)
            attacks[f"http {method} {path}"] = response.status_code
            assert response.status_code == status, (path, response.text)
        assert json.loads(bodies[1])["items"] == []
        assert json.loads(bodies[2]) == {"unread": 3}

    # A live notification for the victim goes to the victim only.
    async with _victim(gateway, victim) as victim_ws:
        live = _notification(victim, f"{marker} live", "live")
        await _seed_live(deployment, live, _notification(attacker, "mine live", "x"))
        await wait_for(lambda: any(f.get("notification", {}).get("title") == "mine live" for f in ws.frames))
        await wait_for(lambda: live.notification_id in victim_ws.notification_ids())
        # The victim's inbox is untouched by everything above.
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            theirs_now = await http.get(
                "/inbox?limit=100", headers={"Authorization": f"Bearer {token(victim)}"}
            )
        assert theirs_now.json()["unread"] == 6
        assert all(not i["read"] and not i["archived"] for i in theirs_now.json()["items"])
    for listener in listeners:
        await listener.stop()

    received = [json.dumps(f) for listener in listeners for f in listener.frames] + bodies
    # The victim's id may appear only where the attacker typed it; an echo of it would be found here.
    leaks = _leaks(received, secrets)
    in_log = tokens_in_log(gateway, [token(attacker), token(victim)])
    report(_figures("security: cross-user", len(attacks), len(attacks), leaks, tokens_in_log=len(in_log)))
    assert not leaks, leaks
    assert not in_log, in_log


class _victim:
    """The victim, connected, as an async context manager."""

    def __init__(self, gateway: Gateway, user_id: str) -> None:
        self.listener = Listener(user_id)
        self.gateway = gateway

    async def __aenter__(self) -> Listener:
        await self.listener.open(self.gateway.ws_url, token(self.listener.user_id))
        return self.listener

    async def __aexit__(self, *exc: object) -> None:
        await self.listener.stop()


async def _seed_live(deployment: Deployment, *notifications: InAppNotification) -> None:
    await produce_all(
        deployment.bootstrap,
        deployment.stack.topic("deliver.inapp"),
        [(n.recipient.encode(), n.to_json()) for n in notifications],
    )


MAX_FRAME = 4096
# An unfinished handshake or an unanswered ping must not hold a socket for longer than this. The gateway pings
# every second here and waits five seconds for the pong; a handshake takes well under a second on loopback.
DROP_BOUND_SECONDS = 10.0


async def test_oversized_frames_floods_and_slow_loris_clients_are_cut_off_and_others_carry_on(
    deployment: Deployment, report: Any
) -> None:
    gateway = await start_gateway(
        deployment,
        HERALD_GATEWAY_MAX_FRAME_BYTES=str(MAX_FRAME),
        HERALD_GATEWAY_PING_INTERVAL_SECONDS="1",
        # Five seconds: this process also runs the attackers, and while the gateway answers a flood of 5,000
        # pings on a two-core machine shared with another test process, CI cut the bystander off as
        # unresponsive with one second and again with two. A deaf client is still dropped well within
        # DROP_BOUND_SECONDS.
        HERALD_GATEWAY_PING_TIMEOUT_SECONDS="5",
        HERALD_GATEWAY_HANDSHAKE_TIMEOUT_SECONDS="2",
    )
    attacker, bystander = f"mallory-{deployment.tag}", f"alice-{deployment.tag}"
    await _seed(deployment, gateway, *[_notification(attacker, f"n{n}", "x" * 500) for n in range(100)])
    alice = Listener(bystander)
    await alice.open(gateway.ws_url, token(bystander))
    outcomes: dict[str, Any] = {}

    async def bystander_is_served(label: str) -> None:
        """Alice's ping is answered promptly whatever the attacker does."""
        started = time.monotonic()
        await alice.send(type="ping", id=label)
        await wait_for(lambda: any(f.get("id") == label for f in alice.frames), timeout=5)
        outcomes[f"bystander pong after {label} (s)"] = round(time.monotonic() - started, 3)

    # 1. Oversized: one frame, a message fragmented into small frames, a header announcing 1 TB.
    async with connect(
        gateway.ws_url, additional_headers={"Authorization": f"Bearer {token(attacker)}"}
    ) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "ping", "v": 1, "id": "x" * (MAX_FRAME * 2)}))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        except ConnectionClosed:
            pass
        outcomes["oversized frame"] = ws.close_code
    for attack, payload in (
        (
            "fragmented oversized message",
            b"".join(client_frame(b"x" * 1000, opcode=0x1 if n == 0 else 0x0, fin=False) for n in range(10)),
        ),
        ("frame announcing 1 TB", _announce(1 << 40)),
    ):
        raw = RawClient(gateway.port)
        await raw.connect()
        await raw.upgrade({"Authorization": f"Bearer {token(attacker)}"})
        await raw.send(payload)
        assert await raw.read_until_eof(TIMEOUT), attack
        outcomes[attack] = _last_close(raw.received)
        raw.close()
    await bystander_is_served("oversized")

    # 2. A flood of requests from a client that never reads its answers: its queue fills, 1013 slow_client.
    raw = RawClient(gateway.port)
    await raw.connect()
    await raw.upgrade({"Authorization": f"Bearer {token(attacker)}"})
    flood = b"".join(
        client_frame(json.dumps({"type": "list", "v": 1, "limit": 100}).encode()) for _ in range(2000)
    )
    sender = asyncio.create_task(raw.send(flood))
    # Each `list` is a page from the worker that keeps the inbox, answered one after the other: the replies
    # first fill the kernel's socket buffers (megabytes on loopback): on a loaded machine that takes a while.
    await _until_metric(gateway, "herald_gateway_slow_client_disconnects_total", 1, timeout=120)
    sender.cancel()
    # Read from now on, beside the bystander's ping: the gateway gives a client that reads nothing
    # CLOSE_TIMEOUT_SECONDS (5 s) to take its close frame, and on a loaded machine the ping alone took longer.
    reading = asyncio.create_task(raw.read_until_eof(TIMEOUT))
    await bystander_is_served("flood")
    assert await reading, "the flooding socket was not closed"
    outcomes["flood, never reading"] = _last_close(raw.received)
    raw.close()
    # A flood of pings from a client that does read: answered in order until the replies outrun the socket
    # and the queue fills (1013 too: a burst beyond HERALD_GATEWAY_SEND_QUEUE_SIZE frames is a flood).
    async with connect(
        gateway.ws_url, additional_headers={"Authorization": f"Bearer {token(attacker)}"}
    ) as ws:
        await ws.recv()
        count, answers = 5000, []
        try:
            for n in range(count):
                await ws.send(json.dumps({"type": "ping", "v": 1, "id": f"p{n}"}))
                if n % 50 == 0:
                    # A send that need not wait never yields: without this the loop would keep the bystander
                    # (a client in this same process) from answering the gateway's pings while it runs.
                    await asyncio.sleep(0)
            while len(answers) < count:
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["id"])
        except ConnectionClosed:
            pass
        await bystander_is_served("ping flood")
        assert answers == [f"p{n}" for n in range(len(answers))]
        outcomes["ping flood, reading"] = (ws.close_code, ws.close_reason, f"{len(answers)} answered")

    # 3. Slow loris: handshakes dribbled a byte at a time, a connection that never sends a byte, and a client
    # that completes the handshake and then never reads (so never answers the gateway's pings).
    dribblers = [RawClient(gateway.port) for _ in range(10)]
    silent = RawClient(gateway.port)
    deaf = RawClient(gateway.port, receive_buffer=1024)
    for raw in (*dribblers, silent, deaf):
        await raw.connect()
    await deaf.upgrade({"Authorization": f"Bearer {token(attacker)}"})
    request = handshake_request(gateway.port, headers={"Authorization": f"Bearer {token(attacker)}"})

    async def dribble(raw: RawClient) -> None:
        for byte in request:
            await raw.send(bytes([byte]))
            await asyncio.sleep(0.5)

    dribbling = [asyncio.create_task(dribble(raw)) for raw in dribblers]
    await bystander_is_served("slow loris")
    started = time.monotonic()
    closed = await asyncio.gather(
        *(raw.read_until_eof(DROP_BOUND_SECONDS) for raw in (*dribblers, silent, deaf))
    )
    for task in dribbling:
        task.cancel()
    outcomes["dribbled handshakes dropped"] = f"{sum(closed[:10])}/10"
    outcomes["silent connection dropped"] = closed[10]
    outcomes["deaf client dropped"] = closed[11]
    outcomes["slow loris wait (s)"] = round(time.monotonic() - started, 1)
    for raw in (*dribblers, silent, deaf):
        raw.close()
    await bystander_is_served("after")
    await alice.stop()

    tried = 3 + 2 + 12
    ping_flood_closed = outcomes["ping flood, reading"][:2] in ((1013, "slow_client"), (None, None))
    refused = (
        [
            outcomes["oversized frame"],
            outcomes["fragmented oversized message"][0],
            outcomes["frame announcing 1 TB"][0],
        ].count(1009)
        + 1  # the flood: cut off as slow (the metric), with or without its close frame (below)
        + (outcomes["ping flood, reading"][0] == 1013)
        + sum(closed)
    )
    received = [json.dumps(f) for f in alice.frames]
    leaks = _leaks(received, [attacker])
    in_log = tokens_in_log(gateway, [token(attacker), token(bystander)])
    report(_figures("security: frames/flood/loris", tried, refused, leaks, outcomes=outcomes))
    assert outcomes["oversized frame"] == 1009
    assert outcomes["fragmented oversized message"][0] == 1009
    assert outcomes["frame announcing 1 TB"][0] == 1009
    # Cut off as slow either way (the metric above). Whether a client that reads nothing also gets the 1013
    # frame is a race it sets up itself: the frame can only be written once the client drains what is
    # already queued to it (uvicorn waits for the transport to be writable, the gateway 5 s), and a socket
    # closed with the client's unread flood still in it is reset, which discards what the client had not read
    # yet. Twice under load (two test processes) it ended with no close frame.
    assert outcomes["flood, never reading"] in ((1013, "slow_client"), None), outcomes["flood, never reading"]
    assert ping_flood_closed, outcomes["ping flood, reading"]
    assert closed[11], "a client that never answers pings was not dropped"
    assert all(closed[:11]), (
        f"connections that never completed the WebSocket handshake were still open after "
        f"{DROP_BOUND_SECONDS} s: {outcomes}"
    )
    assert not leaks and not in_log, (leaks, in_log)


def _announce(length: int) -> bytes:
    """A text frame header announcing `length` bytes, followed by only a few of them."""
    import struct

    return struct.pack("!BBQ", 0x81, 0x80 | 127, length) + b"\x00\x00\x00\x00" + b"x" * 16


def _last_close(data: bytes) -> tuple[int, str] | None:
    closes = [close_code_of(payload) for opcode, payload in server_frames(data) if opcode == 0x8]
    return closes[-1] if closes else None


async def _until_metric(gateway: Gateway, name: str, at_least: float, timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while await gateway.metric(name) < at_least:
            await asyncio.sleep(0.1)


INJECTIONS = [
    "{{ config }}",
    "{{ settings }}",
    "{{ 7*7 }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{% include '/etc/passwd' %}",
    "{{ self._TemplateReference__context }}",
]


async def test_template_syntax_in_event_data_is_delivered_as_text_and_never_run(
    deployment: Deployment, report: Any
) -> None:
    deployment.stack.extra_env.update(deployment.providers.env(email=False, sms=False, push=False))
    await deployment.start_worker("worker-1")
    gateway = await start_gateway(deployment)
    users = profiles.users(deployment, 2)
    await deployment.add_users(users, "worker-1")
    user_id = users[0]["user_id"]
    listener = Listener(user_id)
    await listener.open(gateway.ws_url, token(user_id))
    events = [
        deployment.event("order.shipped", user_id, order_id=text, carrier=text, items=[text])
        for text in INJECTIONS
    ]
    expected = expected_notifications(events, deployment.profiles)
    outputs = Outputs(deployment)
    await deployment.publish(events)
    observed = await outputs.settle(expected, timeout=60)
    await outputs.close()
    inapp_ids = {nid for nid, e in expected.items() if e.channel is Channel.INAPP}
    await wait_for(lambda: inapp_ids <= set(listener.notification_ids()), timeout=30)
    await listener.stop()

    mails = deployment.providers.smtp.messages[outputs.since["smtp"] :]
    texts = [m.get_body(preferencelist=("plain",)).get_content() for m in mails]
    htmls = [html.unescape(m.get_body(preferencelist=("html",)).get_content()) for m in mails]
    frames = {
        f["notification"]["event_id"]: f["notification"]
        for f in listener.frames
        if f["type"] == "notification"
    }
    shown: dict[str, bool] = {}
    for event, text in zip(events, INJECTIONS, strict=True):
        note = frames[event["event_id"]]
        title, body = html.unescape(note["title"]), html.unescape(note["body"])
        mail_text = next(t for t in texts if f"Your order {text} is on its way" in t or text in t)
        shown[text] = (
            title == f"Your order {text} has shipped"
            and body.startswith(f"{text} is on its way")
            and f"Your order {text} is on its way with {text}." in mail_text
        )
    everything = [json.dumps(f) for f in listener.frames] + texts + htmls
    settings_values = [
        v for k, v in deployment.stack.env.items() if k.startswith("HERALD_") and len(v) >= 8 and "/" not in v
    ]
    evaluated = ["<class", "root:x:0", "uid=", "Settings(", "SecretStr", "environ(", "Context {", JWT_SECRET]
    leaks = _leaks(everything, evaluated + [v for v in settings_values if v not in user_id])
    # "49" from {{ 7*7 }} would be shown as "Your order 49 has shipped".
    leaks += [r[:120] for r in everything if "order 49 " in r]
    figures = check("security: template injection", len(events), expected, observed)
    figures.hostile_inputs = len(INJECTIONS)
    figures.unexpected += len(leaks)
    figures.notes = {"shown_literally": f"{sum(shown.values())}/{len(shown)}", "leaks": len(leaks)}
    report(figures)
    assert not figures.problems(), figures.problems()
    assert not leaks, leaks
    assert all(shown.values()), {k: v for k, v in shown.items() if not v}
