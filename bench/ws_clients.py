"""The gateway's clients, in their own process: picows sockets (uvloop), one user each, noting how long each
notification took from its send stamp (`data.sent_at`). Driven by one command per line on stdin, each
answered by one line on stdout. `python -m bench.ws_clients URL JWT_SECRET`.

    connect N PREFIX   open N sockets as users PREFIX0 … PREFIX{N-1}  -> "connected <opened> <welcomed> <s>"
    wait TOTAL S       until TOTAL notifications, or S seconds        -> "received <notifications> <s>"
    status                                                            -> "open <sockets> <notifications>"
    dump PATH          latencies (s) and close codes to PATH, reset   -> "dumped <count>"
    close              close every socket                             -> "closed <still open>"
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter as Codes
from pathlib import Path
from typing import IO, Any

import jwt
import orjson
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.line_process import LineProcess
from bench.ws_stack_servers import more_open_files

CONCURRENT_HANDSHAKES = 100
CONNECT_TIMEOUT_SECONDS = 120.0
NOTIFICATION = b'{"type":"notification"'


class Tally:
    def __init__(self) -> None:
        self.open = 0
        self.welcomed = 0
        self.notifications = 0
        self.latencies: list[float] = []
        self.unstamped = 0
        self.close_codes: Codes[int] = Codes()


class Client(WSListener):
    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self._tally = tally
        self._welcomed = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._tally.open += 1

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            received = time.time()
            payload = frame.get_payload_as_bytes()
            if payload.startswith(NOTIFICATION):
                tally = self._tally
                tally.notifications += 1
                sent_at = orjson.loads(payload)["notification"].get("data", {}).get("sent_at")
                if sent_at is None:
                    tally.unstamped += 1
                else:
                    tally.latencies.append(received - float(sent_at))
            elif not self._welcomed:
                self._welcomed = True
                self._tally.welcomed += 1
        elif frame.msg_type == WSMsgType.CLOSE:
            self._tally.close_codes[frame.get_close_code().value] += 1
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._tally.open -= 1


class Clients:
    def __init__(self, url: str, secret: str) -> None:
        self._url = url
        self._secret = secret
        self.tally = Tally()
        self._sockets: list[WSTransport] = []

    def _url_for(self, user: str) -> str:
        now = int(time.time())
        claims = {"sub": user, "iat": now, "exp": now + 3600}
        return f"{self._url}?token={jwt.encode(claims, self._secret, algorithm='HS256')}"

    async def _open(self, user: str, gate: asyncio.Semaphore) -> WSTransport | None:
        async with gate:
            try:
                transport, _ = await ws_connect(
                    lambda: Client(self.tally), self._url_for(user), websocket_handshake_timeout=30
                )
            except Exception:
                return None
        return transport

    async def connect(self, n: int, prefix: str) -> str:
        began = time.monotonic()
        expected = self.tally.welcomed + n
        gate = asyncio.Semaphore(CONCURRENT_HANDSHAKES)
        opened = await asyncio.gather(*(self._open(f"{prefix}{i}", gate) for i in range(n)))
        self._sockets.extend(t for t in opened if t is not None)
        deadline = began + CONNECT_TIMEOUT_SECONDS
        while self.tally.welcomed < expected and time.monotonic() < deadline:
            if self.tally.welcomed >= self.tally.open and self.tally.open < expected:
                break  # every open socket is welcomed and the rest did not open
            await asyncio.sleep(0.05)
        ok = sum(t is not None for t in opened)
        return f"connected {ok} {self.tally.welcomed} {time.monotonic() - began:.2f}"

    async def wait(self, total: int, seconds: float) -> str:
        began = time.monotonic()
        while self.tally.notifications < total and time.monotonic() - began < seconds:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return f"received {self.tally.notifications} {time.monotonic() - began:.3f}"

    def dump(self, path: Path) -> str:
        tally = self.tally
        body = {
            "latencies": tally.latencies,
            "notifications": tally.notifications,
            "unstamped": tally.unstamped,
            "close_codes": {str(code): n for code, n in tally.close_codes.items()},
        }
        path.write_bytes(orjson.dumps(body))
        count = len(tally.latencies)
        tally.latencies, tally.notifications, tally.unstamped = [], 0, 0
        return f"dumped {count}"

    async def close(self) -> str:
        for transport in self._sockets:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        self._sockets = []
        deadline = time.monotonic() + 10
        while self.tally.open > 0 and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter
            await asyncio.sleep(0.05)
        return f"closed {self.tally.open}"


async def main_async(url: str, secret: str) -> None:
    clients = Clients(url, secret)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        verb, *args = line.split()
        if verb == "connect":
            answer = await clients.connect(int(args[0]), args[1])
        elif verb == "wait":
            answer = await clients.wait(int(args[0]), float(args[1]))
        elif verb == "status":
            answer = f"open {clients.tally.open} {clients.tally.notifications}"
        elif verb == "dump":
            answer = clients.dump(Path(args[0]))
        elif verb == "close":
            answer = await clients.close()
        else:
            answer = f"unknown command {verb!r}"
        print(answer, flush=True)


class ClientsProcess(LineProcess):
    """The harness's end: `python -m bench.ws_clients` in its own process, asked one command at a time (each
    `ask` waits in a thread, so the harness's loop keeps producing)."""

    def __init__(self, url: str, secret: str, log: IO[bytes]) -> None:
        super().__init__("bench.ws_clients", [url, secret], log)

    async def ask(self, line: str) -> list[str]:
        return await asyncio.to_thread(self.ask_now, line)

    async def connect(self, n: int, prefix: str) -> tuple[int, int, float]:
        """(opened, welcomed, seconds)."""
        _, opened, welcomed, seconds = await self.ask(f"connect {n} {prefix}")
        return int(opened), int(welcomed), float(seconds)

    async def wait(self, total: int, seconds: float) -> int:
        return int((await self.ask(f"wait {total} {seconds}"))[1])

    async def dump(self, path: Path) -> dict[str, Any]:
        await self.ask(f"dump {path}")
        seen: dict[str, Any] = orjson.loads(await asyncio.to_thread(path.read_bytes))
        return seen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def main() -> None:
    more_open_files()
    import uvloop

    url, secret = sys.argv[1:3]
    uvloop.run(main_async(url, secret))


if __name__ == "__main__":
    main()
