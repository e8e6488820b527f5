"""The clients of `bench.ws_stacks`, in their own process: picows sockets that count the frames they receive,
driven by one command per line on stdin, each answered by one line on stdout.
`python -m bench.ws_stack_clients URL [JWT_SECRET] [--deflate]`; with a secret, socket i connects as user
u<i>; with --deflate each handshake offers permessage-deflate, as browsers do.

    control          open the control socket        -> "ok"
    connect N        open N idle sockets            -> "connected <welcomed> <seconds>"
    broadcast K      ask for K frames to everyone   -> "sent"
    wait TOTAL S     until TOTAL frames or S secs   -> "received <frames> <seconds>"
    status                                          -> "open <sockets>"
"""

from __future__ import annotations

import asyncio
import sys
import time

import jwt
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.ws_stack_servers import BROADCAST, more_open_files

CONCURRENT_HANDSHAKES = 100
CONNECT_TIMEOUT_SECONDS = 120.0
# What Chromium and Firefox offer. The counter only counts frames, so compressed ones need no inflating.
DEFLATE = "permessage-deflate; client_max_window_bits"


class Tally:
    def __init__(self) -> None:
        self.open = 0
        self.welcomed = 0
        self.frames = 0  # after each socket's welcome


class Counter(WSListener):
    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self._tally = tally
        self._welcomed = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._tally.open += 1

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            if self._welcomed:
                self._tally.frames += 1
            else:
                self._welcomed = True
                self._tally.welcomed += 1
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._tally.open -= 1


class Clients:
    def __init__(self, url: str, secret: str | None, *, deflate: bool = False) -> None:
        self._url = url
        self._secret = secret
        self._headers = {"Sec-WebSocket-Extensions": DEFLATE} if deflate else None
        self.tally = Tally()
        self._sockets: list[WSTransport] = []
        self._control: WSTransport | None = None

    def _url_for(self, index: int) -> str:
        if self._secret is None:
            return self._url
        now = int(time.time())
        claims = {"sub": f"u{index}", "iat": now, "exp": now + 3600}
        return f"{self._url}?token={jwt.encode(claims, self._secret, algorithm='HS256')}"

    async def _open(self, index: int, gate: asyncio.Semaphore) -> WSTransport | None:
        async with gate:
            try:
                transport, _ = await ws_connect(
                    lambda: Counter(self.tally),
                    self._url_for(index),
                    websocket_handshake_timeout=30,
                    extra_headers=self._headers,
                )
            except Exception:
                return None
        return transport

    async def control(self) -> str:
        self._control = await self._open(len(self._sockets), asyncio.Semaphore(1))
        began = time.monotonic()
        while self.tally.welcomed < 1 and time.monotonic() - began < CONNECT_TIMEOUT_SECONDS:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return "ok" if self._control is not None and self.tally.welcomed else "failed"

    async def connect(self, n: int) -> str:
        began = time.monotonic()
        expected = self.tally.welcomed + n
        gate = asyncio.Semaphore(CONCURRENT_HANDSHAKES)
        first = len(self._sockets) + 1
        opened = await asyncio.gather(*(self._open(first + i, gate) for i in range(n)))
        self._sockets.extend(t for t in opened if t is not None)
        deadline = began + CONNECT_TIMEOUT_SECONDS
        while self.tally.welcomed < expected and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter
            await asyncio.sleep(0.05)
        return f"connected {sum(t is not None for t in opened)} {time.monotonic() - began:.2f}"

    def broadcast(self, count: int) -> str:
        if self._control is None:
            return "no control socket"
        self._control.send(WSMsgType.TEXT, f"{BROADCAST}{count}".encode())
        return "sent"

    async def wait(self, total: int, seconds: float) -> str:
        began = time.monotonic()
        while self.tally.frames < total and time.monotonic() - began < seconds:  # noqa: ASYNC110 - a counter
            await asyncio.sleep(0.01)
        return f"received {self.tally.frames} {time.monotonic() - began:.3f}"


async def main_async(url: str, secret: str | None, *, deflate: bool) -> None:
    clients = Clients(url, secret, deflate=deflate)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        verb, *args = line.split()
        if verb == "control":
            answer = await clients.control()
        elif verb == "connect":
            answer = await clients.connect(int(args[0]))
        elif verb == "broadcast":
            answer = clients.broadcast(int(args[0]))
        elif verb == "wait":
            answer = await clients.wait(int(args[0]), float(args[1]))
        elif verb == "status":
            answer = f"open {clients.tally.open}"
        else:
            answer = f"unknown command {verb!r}"
        print(answer, flush=True)


def main() -> None:
    more_open_files()
    import uvloop

    args = [a for a in sys.argv[1:] if a != "--deflate"]
    secret = args[1] if len(args) > 1 else None
    uvloop.run(main_async(args[0], secret, deflate="--deflate" in sys.argv))


if __name__ == "__main__":
    main()
