"""A small threaded HTTP server that records every request and can be scripted to fail or hang."""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """The urlencoded body, one value per name (the last one wins)."""
        return {name: values[-1] for name, values in parse_qs(self.body.decode()).items()}


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
        return cls(
            status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
        )


@dataclass(frozen=True)
class _Hang:
    seconds: float


@dataclass(frozen=True)
class _Late:
    reply: Reply
    seconds: float


class ScriptedHttpServer:
    """Subclasses answer requests in `answer`; `fail_next` and `hang_next` override the next N of them."""

    def __init__(self, host: str = "127.0.0.1", *, keep_alive: bool = False) -> None:
        self._lock = threading.Lock()
        self._script: deque[Reply | _Hang | _Late] = deque()
        self._requests: list[RecordedRequest] = []
        self._peers: set[tuple[Any, ...]] = set()  # the client ends of the connections requests came over
        self._released = threading.Event()
        # HTTP/1.1 keeps a connection open between requests, as real providers do; by default each answer
        # closes it (HTTP/1.0).
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self, keep_alive))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=type(self).__name__, daemon=True
        )

    # --- to override ------------------------------------------------------------------------------------
    def answer(self, request: RecordedRequest) -> Reply:
        return Reply(404)

    def scriptable(self, request: RecordedRequest) -> bool:
        """Whether scripted failures apply to this request (e.g. not to an OAuth token fetch)."""
        return True

    # --- for tests --------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def peers(self) -> set[tuple[Any, ...]]:
        with self._lock:
            return set(self._peers)

    def fail_next(self, reply: Reply, times: int = 1) -> None:
        with self._lock:
            self._script.extend([reply] * times)

    def hang_next(self, times: int = 1, seconds: float = 10.0) -> None:
        """Accept the next requests but answer nothing for `seconds` (or until the server stops)."""
        with self._lock:
            self._script.extend([_Hang(seconds)] * times)

    def answer_late(self, reply: Reply, seconds: float, times: int = 1) -> None:
        """Answer the next requests with `reply` after `seconds`, on the connection they came over."""
        with self._lock:
            self._script.extend([_Late(reply, seconds)] * times)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- for the handler --------------------------------------------------------------------------------
    def _take(self, request: RecordedRequest, peer: tuple[Any, ...]) -> Reply | _Hang | _Late:
        with self._lock:
            self._requests.append(request)
            self._peers.add(peer)
            scripted = self._script.popleft() if self._script and self.scriptable(request) else None
        return scripted if scripted is not None else self.answer(request)


def _handler_for(server: ScriptedHttpServer, keep_alive: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                # The client went away mid-request (a killed worker): a real server never acts on half a
                # request, so neither is it recorded as one.
                self.close_connection = True
                return
            request = RecordedRequest(
                method=self.command,
                target=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
            )
            reply = server._take(request, tuple(self.client_address))
            if isinstance(reply, _Hang):
                server._released.wait(reply.seconds)
                self.close_connection = True
                return
            if isinstance(reply, _Late):
                server._released.wait(reply.seconds)
                reply = reply.reply
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
