"""WebSocket clients for the reliability cases: a listener that keeps every frame it received and how its
socket closed, and a raw TCP client that speaks only as much of the protocol as an attacker needs."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TIMEOUT = 15.0


@dataclass
class Listener:
    """One user's socket, read in the background until it closes; every frame is kept, in order."""

    user_id: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    close: tuple[int | None, str | None] | None = None
    _ws: ClientConnection | None = None
    _task: asyncio.Task[None] | None = None

    async def open(self, url: str, token: str, since: str | None = None) -> dict[str, Any]:
        """Connect, wait for the first frame (the welcome) and keep reading in the background."""
        self.close = None
        query = f"?since={since}" if since else ""
        self._ws = await connect(
            url + query, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=TIMEOUT
        )
        first: dict[str, Any] = json.loads(await asyncio.wait_for(self._ws.recv(), TIMEOUT))
        self.frames.append(first)
        self._task = asyncio.create_task(self._read(self._ws))
        return first

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                self.frames.append(json.loads(message))
        except ConnectionClosed:
            pass
        self.close = (ws.close_code, ws.close_reason)

    async def send(self, **frame: Any) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps({"v": 1, **frame}))

    async def closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str | None]:
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)
        assert self.close is not None
        return self.close

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            await asyncio.wait_for(self._task, TIMEOUT)

    def notification_ids(self) -> list[str]:
        return [f["notification"]["notification_id"] for f in self.frames if f["type"] == "notification"]

    def last_notification_id(self) -> str | None:
        ids = self.notification_ids()
        return ids[-1] if ids else None


async def wait_for(condition: Any, timeout: float = TIMEOUT, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


# --- raw sockets ------------------------------------------------------------------------------------------
def handshake_request(port: int, path: str = "/ws", headers: dict[str, str] | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(payload: bytes, opcode: int = 0x1, *, fin: bool = True) -> bytes:
    """One masked client frame (RFC 6455 section 5.2); `fin=False` leaves the message to continue."""
    mask = os.urandom(4)
    length = len(payload)
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        head = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The complete (opcode, payload) server frames (unmasked) at the start of `data`."""
    frames, at = [], 0
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            if at + 2 > len(data):
                break
            (length,) = struct.unpack("!H", data[at : at + 2])
            at += 2
        elif length == 127:
            if at + 8 > len(data):
                break
            (length,) = struct.unpack("!Q", data[at : at + 8])
            at += 8
        if at + length > len(data):
            break
        frames.append((opcode, data[at : at + length]))
        at += length
    return frames


def close_code_of(payload: bytes) -> tuple[int, str]:
    (code,) = struct.unpack("!H", payload[:2])
    return code, payload[2:].decode(errors="replace")


class RawClient:
    """A non-blocking TCP socket to the gateway with a small receive buffer, driven byte by byte."""

    def __init__(self, port: int, receive_buffer: int = 4096) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.setblocking(False)
        self.received = b""

    async def connect(self) -> None:
        await asyncio.get_running_loop().sock_connect(self.sock, ("127.0.0.1", self.port))

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def upgrade(self, headers: dict[str, str]) -> None:
        """Complete the WebSocket handshake; what follows the 101 response stays in `received`."""
        await self.send(handshake_request(self.port, headers=headers))
        while b"\r\n\r\n" not in self.received:
            chunk = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), TIMEOUT)
            assert chunk, "the gateway closed during the handshake"
            self.received += chunk
        head, _, self.received = self.received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head[:200]

    async def read_until_eof(self, timeout: float) -> bool:
        """Read what the server sends until it closes the connection; False if it did not in time."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    chunk = await loop.sock_recv(self.sock, 1 << 20)
                    if not chunk:
                        return True
                    self.received += chunk
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
