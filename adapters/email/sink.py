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
        refusal = self._sink.refusal
        if refusal is not None:
            return refusal
        self._sink.record(message, list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class SmtpSink:
    """Accepts every message (or answers `refusal`, e.g. "550 No such user", to test failures)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        on_message: Callable[[EmailMessage], None] | None = None,
    ) -> None:
        # aiosmtpd checks its own listener by connecting to the configured port, so 0 cannot be used as is.
        self._controller = Controller(_Handler(self), hostname=host, port=port or _free_port(host))
        self._lock = threading.Lock()
        self._messages: list[tuple[EmailMessage, list[str]]] = []
        self._on_message = on_message
        self.refusal: str | None = None

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
