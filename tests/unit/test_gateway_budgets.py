"""Byte budgets in the gateway: each socket's send queue (and what it holds while starting), `list` replies
and `?since=` recovery. The queue's accounting against a sink that never completes a write; the rest over real
loopback sockets, the owner cutting replies to the budget as the worker does."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.connections import Connection, ConnectionRegistry
from gateway.metrics import GatewayMetrics
from gateway.protocol import inbox_frame
from kernel.errors import ConfigurationError
from kernel.settings import GATEWAY_FRAME_OVERHEAD_BYTES, Settings, load_settings
from schemas.frames import Item, Page, fit, inbox_body
from schemas.inbox import SessionRequest
from schemas.notifications import InAppNotification
from schemas.websocket import CloseReason
from tests.unit import test_gateway_sockets as sockets
from tests.unit.test_gateway_sockets import (
    TIMEOUT,
    GatewayFactory,
    _connect,
    _eventually,
    _frame,
    _http,
    _send,
    _stalled_client,
    _token,
)

start_gateway = sockets.start_gateway
KIB = 1024


# --- the send queue's accounting --------------------------------------------------------------------------
class StalledSink:
    """A client that reads nothing: each write waits until the test lets one through."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.closed_with: tuple[int, str | None] | None = None
        self._permits = asyncio.Semaphore(0)

    async def send_text(self, data: str) -> None:
        await self._permits.acquire()
        self.written.append(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = (code, reason)

    def let_through(self, frames: int) -> None:
        for _ in range(frames):
            self._permits.release()


async def _started(
    sink: StalledSink, registry: CollectorRegistry, *, queue_bytes: int, queue_size: int = 100
) -> Connection:
    connection = Connection(
        "alice",
        sink,
        GatewayMetrics(registry),
        queue_size=queue_size,
        queue_bytes=queue_bytes,
        expires_at=time.time() + 3600,
    )
    connection.start()
    await asyncio.sleep(0)  # the sender waits on the queue
    return connection


def _slow_closes(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("herald_gateway_slow_client_disconnects_total")


async def test_a_frame_over_the_byte_budget_closes_the_connection_as_slow() -> None:
    sink, registry = StalledSink(), CollectorRegistry()
    connection = await _started(sink, registry, queue_bytes=1000)
    try:
        assert connection.push(b"a" * 400)
        await asyncio.sleep(0)  # taken by the sender, whose write never completes: its bytes still count
        assert connection.push(b"b" * 400)
        assert connection.reply(b"c" * 200)  # exactly the budget
        assert connection.queued_bytes == 1000
        assert not connection.push(b"d")
        assert connection.closed and _slow_closes(registry) == 1
        await asyncio.wait_for(connection.ended.wait(), TIMEOUT)
        assert sink.closed_with == (CloseReason.SLOW_CLIENT.code, "slow_client")
        # Nothing queued is held on to once the connection is closed as slow.
        assert (connection.queued_bytes, connection.peak_queued_bytes) == (0, 1000)
        assert not connection.reply(b"e")  # and nothing more is taken
        assert sink.written == []
    finally:
        await connection.stop()


async def test_queued_bytes_are_released_as_frames_are_written() -> None:
    sink, registry = StalledSink(), CollectorRegistry()
    connection = await _started(sink, registry, queue_bytes=1000)
    try:
        for n in range(3):
            assert connection.push(bytes([ord("a") + n]) * 300)
        sink.let_through(2)
        await _eventually(lambda: len(sink.written) == 2)
        assert connection.queued_bytes == 300
        assert connection.push(b"d" * 700)  # fits only because two frames were written
        sink.let_through(2)
        await _eventually(lambda: len(sink.written) == 4)
        assert connection.queued_bytes == 0
        assert [frame[0] for frame in sink.written] == ["a", "b", "c", "d"]
        assert not connection.closed and _slow_closes(registry) == 0
        assert connection.peak_queued_bytes == 1000
    finally:
        await connection.stop()


async def test_the_frame_count_still_bounds_the_queue() -> None:
    sink, registry = StalledSink(), CollectorRegistry()
    connection = await _started(sink, registry, queue_bytes=1_000_000, queue_size=2)
    try:
        assert connection.push(b"a") and connection.push(b"b")
        assert not connection.push(b"c")
        assert _slow_closes(registry) == 1
    finally:
        await connection.stop()


async def test_records_held_while_starting_count_against_the_same_budgets() -> None:
    sink, registry = StalledSink(), CollectorRegistry()
    connection = await _started(sink, registry, queue_bytes=1000, queue_size=3)
    try:
        assert connection.deliver(1, b"a" * 600, notification=True)
        assert connection.deliver(2, b"b" * 400, notification=True)  # exactly the budget
        assert connection.queued_bytes == 0  # held, not queued
        assert not connection.deliver(3, b"c", notification=True)
        assert connection.closed and _slow_closes(registry) == 1
    finally:
        await connection.stop()


async def test_starting_queues_the_snapshot_then_the_held_records_above_it_once() -> None:
    sink, registry = StalledSink(), CollectorRegistry()
    connection = await _started(sink, registry, queue_bytes=1000, queue_size=10)
    try:
        for seq in (4, 5, 5, 6):
            assert connection.deliver(seq, b"%d" % seq, notification=True)
        assert connection.begin(5, [(b"welcome", False), (b"missed", True)])
        assert connection.deliver(6, b"6", notification=True)  # read again
        assert connection.deliver(7, b"7", notification=True)
        sink.let_through(4)
        await _eventually(lambda: len(sink.written) == 4)
        assert sink.written == ["welcome", "missed", "6", "7"]
        assert connection.seen == 7
    finally:
        await connection.stop()


# --- reading a socket in the server's task -----------------------------------------------------------------
async def test_the_server_closing_a_socket_stops_its_reader_in_the_serving_task() -> None:
    sink, registry = StalledSink(), CollectorRegistry()
    connection = await _started(sink, registry, queue_bytes=1000)
    reading = asyncio.Event()

    async def read_forever() -> None:  # a client that never sends, nor answers a close
        reading.set()
        await asyncio.Event().wait()

    served = asyncio.create_task(connection.serve(read_forever()))
    try:
        await asyncio.wait_for(reading.wait(), TIMEOUT)
        connection.close(CloseReason.EXPIRED_TOKEN)
        await asyncio.wait_for(served, TIMEOUT)  # returns instead of raising: the end was asked for
        assert connection.ended.is_set() and not served.cancelled()
        assert sink.closed_with == (CloseReason.EXPIRED_TOKEN.code, "expired_token")
    finally:
        await connection.stop()


async def test_a_cancel_from_elsewhere_still_cancels_the_serving_task() -> None:
    sink, registry = StalledSink(), CollectorRegistry()
    connection = await _started(sink, registry, queue_bytes=1000)
    reading = asyncio.Event()

    async def read_forever() -> None:
        reading.set()
        await asyncio.Event().wait()

    served = asyncio.create_task(connection.serve(read_forever()))
    try:
        await asyncio.wait_for(reading.wait(), TIMEOUT)
        served.cancel()  # the server stopping
        with pytest.raises(asyncio.CancelledError):
            await served
        assert not connection.ended.is_set()
    finally:
        await connection.stop()


def test_the_registry_refuses_an_empty_byte_budget() -> None:
    with pytest.raises(ValueError, match="queue_bytes"):
        ConnectionRegistry(GatewayMetrics(CollectorRegistry()), queue_bytes=0)


# --- settings ---------------------------------------------------------------------------------------------
def test_the_budgets_have_defaults_and_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (defaults.gateway_send_queue_bytes, defaults.gateway_list_reply_bytes) == (1024 * KIB, 256 * KIB)
    monkeypatch.setenv("HERALD_GATEWAY_SEND_QUEUE_BYTES", str(2048 * KIB))
    monkeypatch.setenv("HERALD_GATEWAY_LIST_REPLY_BYTES", str(64 * KIB))
    settings = load_settings(_env_file=None)
    assert (settings.gateway_send_queue_bytes, settings.gateway_list_reply_bytes) == (2048 * KIB, 64 * KIB)


@pytest.mark.parametrize(
    "overrides",
    [
        # One list reply (256 KiB by default) would never fit.
        {"gateway_send_queue_bytes": 200_000},
        # Nor one frame with the largest in-app notification Herald keeps.
        {"inapp_max_bytes": 1_100_000, "max_record_bytes": 2_000_000},
        # Nor would one list reply.
        {"gateway_list_reply_bytes": 1024 * KIB},
    ],
)
def test_a_send_queue_budget_too_small_for_one_frame_fails_naming_the_setting(
    overrides: dict[str, int],
) -> None:
    with pytest.raises(ConfigurationError, match="HERALD_GATEWAY_SEND_QUEUE_BYTES must be at least"):
        load_settings(_env_file=None, **overrides)


def test_a_list_reply_budget_below_its_floor_fails_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="HERALD_GATEWAY_LIST_REPLY_BYTES"):
        load_settings(_env_file=None, gateway_list_reply_bytes=1024)


# --- list replies, as plain data --------------------------------------------------------------------------
# The owner cuts a page (schemas.frames.fit); the gateway wraps the body in a frame, within the overhead.


def _item(n: int, size: int) -> Item:
    return Item(f"ntf_{n}", _notification("alice", n, size).to_json(), False, False)


def test_a_page_is_cut_to_the_items_that_fit_and_the_gateways_frame_fits_the_budget() -> None:
    items = [_item(n, 10 * KIB) for n in range(10)]
    budget = 40 * KIB
    page = fit(Page(items, "ntf_9"), budget - GATEWAY_FRAME_OVERHEAD_BYTES)
    assert 0 < len(page.items) < len(items)
    assert page.items == items[: len(page.items)]
    assert page.next_before == page.items[-1].notification_id
    # The frame fits whatever the request id and cursor, as long as they are valid ones (at most 100 and 200
    # characters, which JSON may escape to six bytes each).
    body = inbox_body(Page(page.items, "\x01" * 200), unread=10**9)
    assert len(inbox_frame(body, request_id="\x01" * 100)) <= budget
    # And it was cut because the next one would not have fitted.
    longer = inbox_body(Page(items[: len(page.items) + 1], None), unread=0)
    assert len(inbox_frame(longer, request_id=None)) + GATEWAY_FRAME_OVERHEAD_BYTES > budget


def test_a_page_that_fits_is_left_as_it_is() -> None:
    page = Page([_item(n, KIB) for n in range(3)], None)
    assert fit(page, 64 * KIB) is page


def test_an_item_larger_than_the_budget_comes_alone_so_paging_moves_on() -> None:
    items = [_item(0, 100 * KIB), _item(1, KIB)]
    page = fit(Page(items, None), 64 * KIB - GATEWAY_FRAME_OVERHEAD_BYTES)
    assert (page.items, page.next_before) == (items[:1], "ntf_0")


# --- over sockets -----------------------------------------------------------------------------------------
def _notification(recipient: str, n: int, size: int) -> InAppNotification:
    now = datetime.now(UTC)
    return InAppNotification(
        notification_id=f"ntf_{n}",
        event_id=f"evt_{n}",
        event_type="order.shipped",
        recipient=recipient,
        occurred_at=now,
        created_at=now,
        title=f"n{n}",
        body="x" * size,
    )


def _client_frame(command: dict[str, Any]) -> bytes:
    """A masked text frame, as a client must send it (RFC 6455 §5.3); the payload is under 126 bytes."""
    payload = json.dumps(command).encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_a_client_that_never_reads_is_closed_as_slow_within_the_byte_budget(
    start_gateway: GatewayFactory,
) -> None:
    """The report: an inbox of large notifications, 20 `list` requests from a socket that never reads. The
    frame bound (256) is never reached; the byte bound closes the socket, and the bytes held never pass it.
    Replies are as large as the default queue allows, so the kernel's socket buffers (a few MB on loopback,
    outside the gateway's accounting) cannot take all 20."""
    overrides = {"gateway_list_reply_bytes": 1_000_000}
    gateway = await start_gateway(**overrides)
    settings = sockets._settings(**overrides)
    for n in range(settings.inbox_size):
        gateway.inbox.add(_notification("alice", n, 50 * KIB))
    stalled = await _stalled_client(gateway, "alice")
    try:
        await _eventually(lambda: gateway.connections.connected("alice"))
        [connection] = gateway.connections.of("alice")
        loop = asyncio.get_running_loop()
        for n in range(20):
            await loop.sock_sendall(
                stalled, _client_frame({"type": "list", "v": 1, "id": f"l{n}", "limit": 100})
            )
        await _eventually(lambda: gateway.sample("herald_gateway_slow_client_disconnects_total") == 1)
        assert connection.closed
        assert 0 < connection.peak_queued_bytes <= settings.gateway_send_queue_bytes
        assert connection.queued_bytes <= settings.gateway_send_queue_bytes
        await _eventually(lambda: not gateway.connections.connected("alice"))
    finally:
        stalled.close()


async def test_paging_a_list_cut_short_gets_every_entry_exactly_once(start_gateway: GatewayFactory) -> None:
    budget = 64 * KIB
    gateway = await start_gateway(gateway_list_reply_bytes=budget)
    sizes = [20 * KIB] * 12 + [100 * KIB] + [KIB] * 20  # one larger than a whole reply
    for n, size in enumerate(sizes):
        gateway.inbox.add(_notification("alice", n, size))
    async with _connect(gateway, "alice", max_size=None) as ws:
        await _frame(ws)
        seen: list[str] = []
        before: str | None = None
        pages = 0
        while True:
            command: dict[str, Any] = {"type": "list", "v": 1, "limit": 100}
            if before is not None:
                command["before"] = before
            await ws.send(json.dumps(command))
            raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
            page = json.loads(raw)
            assert page["type"] == "inbox"
            titles = [item["notification"]["title"] for item in page["items"]]
            assert titles, "a page always moves on"
            assert len(raw.encode()) <= budget or titles == ["n12"]
            seen += titles
            pages += 1
            before = page["next_before"]
            if before is None:
                break
            assert before == page["items"][-1]["notification"]["notification_id"]
        assert seen == [f"n{n}" for n in reversed(range(len(sizes)))]
        assert pages > 3
    # The same budget over HTTP.
    status, body = await _http(gateway.port, "GET", "/inbox?limit=100", token=_token("alice"))
    first = json.loads(body)
    assert status == 200 and len(body.encode()) <= budget
    assert 0 < len(first["items"]) < len(sizes) and first["next_before"] is not None


async def test_a_reconnect_that_missed_more_than_a_reply_holds_is_told_to_reload(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(gateway_list_reply_bytes=64 * KIB)
    gateway.inbox.add(_notification("alice", 0, KIB))
    for n in range(1, 6):
        gateway.inbox.add(_notification("alice", n, 20 * KIB))
    async with _connect(gateway, "alice", query="?since=ntf_0") as ws:
        welcome = await _frame(ws)
        assert (welcome["recovered"], welcome["unread"]) == (False, 6)
        assert (await _send(ws, type="ping"))["type"] == "pong"  # nothing was replayed, and not closed
    # What does fit is recovered.
    async with _connect(gateway, "alice", query="?since=ntf_3") as ws:
        welcome = await _frame(ws)
        assert (welcome["recovered"], welcome["missed"]) == (True, 2)
        assert [(await _frame(ws))["notification"]["title"] for _ in range(2)] == ["n4", "n5"]
    assert gateway.sample("herald_gateway_recoveries_total", outcome="failed") == 1
    assert gateway.sample("herald_gateway_recoveries_total", outcome="recovered") == 1


async def test_a_reconnect_asks_for_no_more_missed_frames_than_the_queue_holds(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(gateway_send_queue_size=4)
    for n in range(6):
        gateway.inbox.add(_notification("alice", n, 10))
    async with _connect(gateway, "alice", query="?since=ntf_0") as ws:
        assert (await _frame(ws))["recovered"] is False
        assert (await _send(ws, type="ping"))["type"] == "pong"
    async with _connect(gateway, "alice", query="?since=ntf_2") as ws:  # three frames and the welcome fit
        assert (await _frame(ws))["missed"] == 3
    sessions = [r for r in gateway.owner.requests if isinstance(r, SessionRequest)]
    assert [r.max_frames for r in sessions] == [3, 3]
    # An owner that sends more than asked for is not believed: the client reloads instead of being closed.
    gateway.owner.ignore_max_frames = True
    async with _connect(gateway, "alice", query="?since=ntf_0") as ws:
        assert (await _frame(ws))["recovered"] is False
        assert (await _send(ws, type="ping"))["type"] == "pong"
    assert gateway.sample("herald_gateway_slow_client_disconnects_total") == 0
    assert gateway.sample("herald_gateway_recoveries_total", outcome="failed") == 2
