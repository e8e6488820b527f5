"""The providers' side, in its own process: an SMTP sink (aiosmtpd) and a minimal Twilio Messages API, each
noting when a notification arrived and the send time stamped in its text. `python -m bench.sinks OUT SMTP
PORT` runs until SIGTERM, then writes what it saw to OUT (JSON)."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs

import orjson

from adapters.email.sink import SmtpSink
from bench.workload import parse_stamp


class Arrivals:
    """Per channel: [seq, sent_at, received_at] rows, appended from the SMTP thread and the HTTP loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: dict[str, list[tuple[int, float, float]]] = {"email": [], "sms": []}
        self.unstamped = 0

    def note(self, channel: str, text: str) -> None:
        received = time.time()
        stamp = parse_stamp(text)
        with self._lock:
            if stamp is None:
                self.unstamped += 1
            else:
                self.rows[channel].append((stamp[0], stamp[1], received))

    def dump(self) -> bytes:
        with self._lock:
            return orjson.dumps({"rows": self.rows, "unstamped": self.unstamped})


_CREATED = (
    b'{"sid":"SM%032x","account_sid":"ACbench","status":"queued","num_segments":"1",'
    b'"direction":"outbound-api","api_version":"2010-04-01"}'
)


async def _serve_twilio(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, arrivals: Arrivals
) -> None:
    """HTTP/1.1 with keep-alive, just enough for the Twilio SDK's `messages.create`."""
    counter = 0
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            form = parse_qs(body.decode())
            arrivals.note("sms", form.get("Body", [""])[-1])
            counter += 1
            payload = _CREATED % counter
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                % (len(payload), payload)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(out: Path, smtp_port: int, http_port: int) -> None:
    arrivals = Arrivals()

    def on_email(message: EmailMessage) -> None:
        arrivals.note("email", str(message["Subject"]))

    smtp = SmtpSink("127.0.0.1", smtp_port, on_message=on_email)
    smtp.start()
    server = await asyncio.start_server(
        lambda r, w: _serve_twilio(r, w, arrivals), "127.0.0.1", http_port, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()
    smtp.stop()
    out.write_bytes(arrivals.dump())  # noqa: ASYNC240 - once, at the end


def main() -> None:
    out, smtp_port, http_port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    asyncio.run(serve(out, smtp_port, http_port))


if __name__ == "__main__":
    main()
