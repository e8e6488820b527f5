"""The gateway's clients, in their own process: N WebSocket connections, one user each, noting how long each
notification took from its send stamp. `python -m bench.ws_clients URL N SECRET READY OUT`; SIGTERM stops."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import jwt
import orjson
from websockets.asyncio.client import connect

from bench.deployment import raise_fd_limit


async def client(
    url: str,
    user: str,
    secret: str,
    gate: asyncio.Semaphore,
    connected: list[int],
    latencies: list[float],
    stop: asyncio.Event,
) -> None:
    now = int(time.time())
    token = jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, secret, algorithm="HS256")
    try:
        async with gate:
            ws = await connect(f"{url}?token={token}", ping_interval=None, max_queue=None, open_timeout=60)
        connected.append(1)
        async with ws:
            async for frame in ws:
                received = time.time()
                message = orjson.loads(frame)
                if message.get("type") == "notification":
                    sent_at = message["notification"].get("data", {}).get("sent_at")
                    if sent_at is not None:
                        latencies.append(received - float(sent_at))
                if stop.is_set():
                    return
    except (OSError, TimeoutError, Exception):
        return


async def main_async(url: str, n: int, secret: str, ready: Path, out: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    gate = asyncio.Semaphore(100)
    connected: list[int] = []
    latencies: list[float] = []
    tasks = [
        asyncio.create_task(client(url, f"u{i}", secret, gate, connected, latencies, stop)) for i in range(n)
    ]
    started = time.monotonic()
    while len(connected) < n and time.monotonic() - started < 180 and not stop.is_set():
        if all(t.done() for t in tasks):
            break
        await asyncio.sleep(0.1)
    summary = f"{len(connected)} {time.monotonic() - started:.2f}"
    ready.write_text(summary)  # noqa: ASYNC240 - once
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    seen = orjson.dumps({"connected": len(connected), "latencies": latencies})
    out.write_bytes(seen)  # noqa: ASYNC240 - once


def main() -> None:
    raise_fd_limit()
    url, n, secret, ready, out = sys.argv[1:6]
    asyncio.run(main_async(url, int(n), secret, Path(ready), Path(out)))


if __name__ == "__main__":
    main()
