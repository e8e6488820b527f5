"""The worker's ops endpoint as the worker serves it (OpsServer, its uvicorn configuration) over loopback
sockets: slow or oversized requests are cut off by deadlines and a body cap, and the bounce webhook refuses an
unsigned request before reading its body. No broker: the Faust app is a stand-in for /readyz."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from adapters.broker.embedded import free_port
from adapters.http.read_limits import ReadLimits
from kernel.access_logs import UVICORN_LOGGERS
from schemas.users import ProfileUpdate
from streams.ops.bounce_webhook import (
    DEFAULT_PATH,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookMetrics,
    bounce_webhook_route,
    load_public_key,
)
from streams.ops.services import OpsServer
from tests.fakes.sendgrid_events import SendGridSigner, batch, bounce

DEADLINE = 0.5  # header and body deadlines in these tests
CUT_OFF_WITHIN = 2.5  # what "closed at the deadline" allows for, on a busy machine
LIMIT = 64 * 1024


class _NotStarted:
    """The Faust app before it starts: enough for /readyz to answer 503."""

    rebalancing = False

    @property
    def consumer(self) -> Any:
        raise RuntimeError("not started")


@dataclass
class Ops:
    port: int
    published: list[ProfileUpdate]
    metrics: CollectorRegistry
    signer: SendGridSigner

    def refused(self, reason: str) -> float | None:
        return self.metrics.get_sample_value(
            "herald_webhook_refused_total", {"provider": "sendgrid", "reason": reason}
        )


@pytest.fixture
async def ops() -> AsyncIterator[Ops]:
    signer, published, registry = SendGridSigner(), [], CollectorRegistry()

    async def publish(update: ProfileUpdate) -> None:
        published.append(update)

    route = bounce_webhook_route(
        publish=publish,
        public_key=load_public_key(signer.public_key_b64),
        clock=lambda: datetime.now(UTC),
        metrics=WebhookMetrics(registry),
        max_body_bytes=LIMIT,
    )
    port = free_port()
    server = OpsServer(
        _NotStarted(),
        registry,
        "127.0.0.1",
        port,
        extra_routes=[route],
        limits=ReadLimits(header_seconds=DEADLINE, body_seconds=DEADLINE, max_body_bytes=LIMIT),
    )
    await server.start()
    try:
        yield Ops(port, published, registry, signer)
    finally:
        await server.stop()


class Raw:
    """A client socket that sends what it is told, when it is told, and reads until the server closes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.received = b""

    @classmethod
    async def open(cls, port: int) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> bool:
        """False once the server has closed the connection."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            return False
        return not self.writer.is_closing()

    async def closed_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                while chunk := await self.reader.read(65536):
                    self.received += chunk
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    @property
    def status(self) -> int | None:
        head = self.received.split(b"\r\n", 1)[0].split()
        return int(head[1]) if len(head) > 1 else None

    def close(self) -> None:
        self.writer.close()


async def _dribble(raw: Raw, data: bytes, every: float = 0.1) -> None:
    for n in range(len(data)):
        if not await raw.send(data[n : n + 1]):
            return
        await asyncio.sleep(every)


async def _cut_off(raw: Raw, attack: Callable[[Raw], Awaitable[None]]) -> float:
    """How long the server kept the connection while `attack` ran; fails if it outlasted the allowance."""
    started = time.monotonic()
    sending = asyncio.create_task(attack(raw))
    try:
        assert await raw.closed_within(CUT_OFF_WITHIN), "the server kept the connection open"
    finally:
        sending.cancel()
        raw.close()
    return time.monotonic() - started


def _post(path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["Transfer-Encoding: chunked"] if length is None else [f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _signed(ops: Ops, body: bytes) -> dict[str, str]:
    return ops.signer.headers(body, int(time.time()))


# --- headers --------------------------------------------------------------------------------------------


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(ops: Ops) -> None:
    async def silent(raw: Raw) -> None:
        await asyncio.Event().wait()

    assert await _cut_off(await Raw.open(ops.port), silent) >= DEADLINE * 0.8


async def test_headers_sent_slowly_to_metrics_are_cut_off_at_the_deadline(ops: Ops) -> None:
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: " + b"x" * 200 + b"\r\n\r\n"
    await _cut_off(await Raw.open(ops.port), lambda raw: _dribble(raw, request))


async def test_the_next_request_on_a_kept_alive_connection_has_a_header_deadline_too(ops: Ops) -> None:
    raw = await Raw.open(ops.port)
    await raw.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = await asyncio.wait_for(raw.reader.readuntil(b'{"status":"ok"}'), 5)
    assert first.startswith(b"HTTP/1.1 200")
    # uvicorn's keep-alive timeout ends at the first byte of the next request; the header deadline does not.
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: " + b"x" * 200 + b"\r\n\r\n"
    await _cut_off(raw, lambda raw: _dribble(raw, request))


async def test_prompt_requests_are_served(ops: Ops) -> None:
    for path, status in (("/healthz", 200), ("/readyz", 503), ("/metrics", 200)):
        raw = await Raw.open(ops.port)
        await raw.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        assert await raw.closed_within(5)
        assert raw.status == status, raw.received


async def test_uvicorn_logs_through_the_workers_handler_and_never_a_query_string(ops: Ops) -> None:
    # uvicorn installs no handler of its own: its lines reach the root logger, where the worker's handler
    # (JSON, redacting) is; and a path is logged without its query string, whatever it holds.
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    try:
        for name in UVICORN_LOGGERS:
            logger = logging.getLogger(name)
            assert logger.handlers == [] or name == "uvicorn.access", (name, logger.handlers)
            logger.warning('%s - "GET %s HTTP/1.1" 400', "127.0.0.1:1", "/metrics?%74oken=eyJx.eyJy.sig")
    finally:
        logging.getLogger().removeHandler(handler)
    assert lines and not any("eyJ" in line or "oken" in line for line in lines), lines
    assert logging.getLogger("uvicorn.access").propagate is False  # no access log at all


# --- bodies ---------------------------------------------------------------------------------------------


async def test_a_signed_body_sent_slowly_is_cut_off_at_the_body_deadline(ops: Ops) -> None:
    body = batch(bounce("ada@example.com", "ada"))
    head = _post(DEFAULT_PATH, _signed(ops, body), len(body))

    async def slow(raw: Raw) -> None:
        await raw.send(head)
        await _dribble(raw, body)

    await _cut_off(await Raw.open(ops.port), slow)
    assert ops.published == []
    assert ops.refused("incomplete_body") == 1


async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(ops: Ops) -> None:
    body = batch(bounce("ada@example.com", "ada"))
    raw = await Raw.open(ops.port)
    await raw.send(_post(DEFAULT_PATH, _signed(ops, body), 16 * 1024 * 1024))
    # Not a byte of the body is sent: the answer comes from the headers alone; the connection ends with it.
    assert await raw.closed_within(CUT_OFF_WITHIN)
    assert raw.status == 413
    assert ops.refused("too_large") == 1


async def test_a_chunked_body_is_cut_off_at_the_limit(ops: Ops) -> None:
    body = batch(bounce("ada@example.com", "ada"))
    raw = await Raw.open(ops.port)
    await raw.send(_post(DEFAULT_PATH, _signed(ops, body), None))
    chunk = b"x" * 65536
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0

    async def pump() -> None:
        # 256 MiB, never ended: read whole, it would keep the connection for as long as it is sent.
        nonlocal sent
        while sent < 256 * 1024 * 1024 and await raw.send(frame):
            sent += len(chunk)

    sending = asyncio.create_task(pump())
    try:
        assert await raw.closed_within(CUT_OFF_WITHIN), "the server kept reading"
    finally:
        sending.cancel()
        raw.close()
    # What the kernel's socket buffers took before the server closed; nothing like the whole body.
    assert sent < 32 * 1024 * 1024, sent
    # The 413 is sent, though a client still sending may see the connection reset before reading it.
    assert raw.status in (413, None)
    assert ops.refused("too_large") == 1


async def test_an_unsigned_request_is_refused_before_its_body_is_read(ops: Ops) -> None:
    raw = await Raw.open(ops.port)
    await raw.send(_post(DEFAULT_PATH, {"Content-Type": "application/json"}, 4096))
    assert await raw.closed_within(CUT_OFF_WITHIN)
    assert raw.status == 401
    assert ops.refused("missing_signature") == 1


async def test_a_badly_signed_body_is_refused_before_it_is_parsed(ops: Ops) -> None:
    body = b"[" * 50_000  # a RecursionError, a 400, if it were parsed first
    raw = await Raw.open(ops.port)
    now = int(time.time())
    headers = {
        SIGNATURE_HEADER: ops.signer.signature(b"[]", now),
        TIMESTAMP_HEADER: str(now),
        "Connection": "close",
    }
    await raw.send(_post(DEFAULT_PATH, headers, len(body)) + body)
    assert await raw.closed_within(CUT_OFF_WITHIN)
    assert raw.status == 401
    assert ops.refused("bad_signature") == 1 and ops.refused("malformed_body") in (None, 0)
