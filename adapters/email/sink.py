"""A local SMTP server that keeps what it receives: `herald dev`'s mailbox and the tests' SMTP peer."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self._sink.calls += 1
        self._sink.peers.add(tuple(session.peer))
        self._sink.greetings.add(session.host_name)
        refusal = self._sink.next_refusal()
        if refusal is not None:
            return refusal
        self._sink.record(message, list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self._sink.quits += 1
        return "221 Bye"


class SmtpSink:
    """Accepts every message, or refuses as told (e.g. "550 No such user") to test failures."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        on_message: Callable[[EmailMessage], None] | None = None,
        smtputf8: bool = True,
    ) -> None:
        # aiosmtpd checks its own listener by connecting to the configured port, so 0 cannot be used as is.
        # SMTPUTF8 offered by default, as Postfix and the large providers do: internationalized addresses go
        # through.
        self._controller = Controller(
            _Handler(self),
            hostname=host,
            port=port or _free_port(host),
            # Named, so aiosmtpd does not look this host up for each connection.
            server_hostname="sink.herald.test",
            enable_SMTPUTF8=smtputf8,
        )
        self._lock = threading.Lock()
        self._messages: list[tuple[EmailMessage, list[str]]] = []
        self._on_message = on_message
        self.refusal: str | None = None  # answered to every message while set
        self._queued_refusals: list[str] = []
        self.calls = 0  # messages offered, accepted or not
        self.peers: set[tuple[Any, ...]] = set()  # the client ends of the connections messages came over
        self.quits = 0  # sessions the client ended with QUIT
        self.greetings: set[str] = set()  # the names clients gave in EHLO (or HELO)

    def refuse_next(self, count: int, reply: str) -> None:
        """Answer the next `count` messages with `reply` (e.g. "451 Try later"), then accept again."""
        with self._lock:
            self._queued_refusals.extend([reply] * count)

    def next_refusal(self) -> str | None:
        with self._lock:
            if self._queued_refusals:
                return self._queued_refusals.pop(0)
        return self.refusal

    def record(self, message: EmailMessage, recipients: list[str]) -> None:
        with self._lock:
            self._messages.append((message, recipients))
        if self._on_message is not None:
            self._on_message(message)

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return [message for message, _ in self._messages]

    @property
    def address(self) -> tuple[str, int]:
        return str(self._controller.hostname), int(self._controller.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
