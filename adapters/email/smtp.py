"""Email over SMTP with aiosmtplib: plain, STARTTLS or implicit TLS, optional login, connections reused."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import ssl
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.charset import QP, Charset
from email.generator import BytesGenerator
from email.header import Header
from email.message import EmailMessage, Message
from email.policy import Compat32
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from typing import Any, Self

import aiosmtplib

from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from kernel.privacy import scrub
from kernel.settings import Settings, SmtpTls
from schemas.notifications import EmailNotification
from schemas.reasons import DeliveryReason

# Reused only while younger than this since their last message: servers may drop an idle client after as
# little as a minute (RFC 5321 asks for five), and a dropped one costs a failed send and a reconnect.
MAX_IDLE_SECONDS = 30.0
# Some servers and relays cap the messages per connection; the default of HERALD_SMTP_MESSAGES_PER_CONNECTION.
MAX_MESSAGES_PER_CONNECTION = 25
# Bodies as quoted-printable UTF-8: readable where they are ASCII, and no line over SMTP's 998 octets.
_BODY_CHARSET = Charset("utf-8")
_BODY_CHARSET.body_encoding = QP


class _Flat(Compat32):
    """compat32 without ">From " mangling (an mbox habit; SMTP needs no such thing), and a header that fits
    on its line written as it is: compat32 folds every header through `email.header.Header`, about 15 µs
    each, most of composing a message, to produce the same bytes for such a line."""

    def fold_binary(self, name: str, value: Any) -> bytes:
        if (
            isinstance(value, str)
            and value.isascii()
            and "=?" not in value
            and len(name) + 2 + len(value) <= (self.max_line_length or 78)
        ):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_FLAT = _Flat(mangle_from_=False)


@dataclass(frozen=True)
class _Mail:
    """A message ready to go: its bytes, or the `EmailMessage` aiosmtplib flattens (SMTPUTF8)."""

    message_id: str
    sender: str
    recipient: str
    content: bytes | EmailMessage

    async def send(self, client: aiosmtplib.SMTP) -> None:
        if isinstance(self.content, bytes):
            await client.sendmail(self.sender, [self.recipient], self.content)
        else:
            await client.send_message(self.content)


class _Stale(Exception):
    """A reused connection turned out closed by the server."""


class _Connection:
    def __init__(self, client: aiosmtplib.SMTP, limit: int) -> None:
        self.client = client
        self.sent = 0
        self.limit = limit
        self.last_used = time.monotonic()

    def reusable(self) -> bool:
        return (
            self.client.is_connected
            and self.sent < self.limit
            and time.monotonic() - self.last_used < MAX_IDLE_SECONDS
        )


class SmtpEmailSender:
    """One message per SMTP transaction over a few kept-open connections: a connection per message costs
    the TCP and TLS handshakes, the greeting, EHLO and login every time, twice the round trips of the
    message itself."""

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: SmtpTls,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
        connections: int = 4,
        messages_per_connection: int = MAX_MESSAGES_PER_CONNECTION,
        local_hostname: str | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._sender = sender
        self._envelope_from = parseaddr(sender)[1]
        self._from_header = formataddr(parseaddr(sender), charset="utf-8")
        self._username = username
        self._password = password
        self._timeout = timeout
        self._tls_context = tls_context
        self._slots = asyncio.Semaphore(connections)
        self._per_connection = messages_per_connection
        self._local_hostname = local_hostname
        self._idle: list[_Connection] = []
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, executor: ThreadPoolExecutor) -> Self | None:
        """The sender the settings describe, or None without `HERALD_SMTP_HOST`. (No threads: aiosmtplib is
        asynchronous.)"""
        if settings.smtp_host is None:
            return None
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            tls=settings.smtp_tls,
            sender=settings.email_from,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout=settings.smtp_timeout_seconds,
            connections=settings.smtp_connections,
            messages_per_connection=settings.smtp_messages_per_connection,
            local_hostname=settings.smtp_local_hostname,
        )

    def _compose(self, message: EmailNotification) -> _Mail:
        """The message as sent. Its bytes come from a `compat32` `Message` unless an address is not ASCII:
        the `EmailMessage` API costs about 1.1 ms of CPU per message to compose and flatten, against 0.2 ms,
        and was most of a delivery worker's time per email (bench/RESULTS.md, eleventh session). What that
        API checks is kept by hand: no line breaks in a header, a display name RFC 2047-encoded apart from
        its address, bodies in 7-bit quoted-printable, no ">From " mangling. Non-ASCII addresses need
        SMTPUTF8 and take the `EmailMessage` path, which aiosmtplib flattens for what the server offers."""
        # The notification id doubles as the Message-ID's left part, so a resend after a crash is
        # recognisable as the same message by the receiving side.
        message_id = make_msgid(idstring=message.notification_id, domain="herald")
        headers = self._headers(message, message_id)
        if not (message.to.isascii() and self._envelope_from.isascii()):
            return _Mail(message_id, self._envelope_from, message.to, self._compose_utf8(message, headers))
        encoded: dict[str, str | Header] = {
            "From": self._from_header,
            "Subject": _text_header(message.subject),
        }
        mail: Message[str, str | Header] = Message()
        for name, value in headers:
            if "\r" in value or "\n" in value:
                raise ValueError(f"the {name} header holds a line break")
            mail[name] = encoded.get(name, value)
        if message.html is None:
            mail.set_payload(message.text, _BODY_CHARSET)  # with MIME-Version and the Content-* headers
        else:
            mail["MIME-Version"] = "1.0"
            mail.set_type("multipart/alternative")
            mail.attach(_body(message.text, "plain"))
            mail.attach(_body(message.html, "html"))
        flat = io.BytesIO()
        BytesGenerator(flat, policy=_FLAT).flatten(mail)
        return _Mail(message_id, self._envelope_from, message.to, flat.getvalue())

    def _headers(self, message: EmailNotification, message_id: str) -> list[tuple[str, str]]:
        return [
            ("From", self._sender),
            ("To", message.to),
            ("Subject", message.subject),
            ("Date", formatdate(localtime=False)),
            ("Message-ID", message_id),
            ("X-Herald-Notification-Id", message.notification_id),
        ]

    def _compose_utf8(self, message: EmailNotification, headers: list[tuple[str, str]]) -> EmailMessage:
        mail = EmailMessage()
        for name, value in headers:
            mail[name] = value
        mail.set_content(message.text)
        if message.html is not None:
            mail.add_alternative(message.html, subtype="html")
        return mail

    async def _connect(self) -> _Connection:
        if self._local_hostname is None:
            # Once: getfqdn may ask DNS (a reverse lookup), which aiosmtplib would do for every connection.
            fqdn = await asyncio.get_running_loop().run_in_executor(None, socket.getfqdn)
            self._local_hostname = fqdn or "localhost"
        client = aiosmtplib.SMTP(
            hostname=self._host,
            local_hostname=self._local_hostname,
            port=self._port,
            username=self._username,
            password=self._password,
            use_tls=self._tls is SmtpTls.IMPLICIT,
            start_tls=True if self._tls is SmtpTls.STARTTLS else False,
            timeout=self._timeout,
            tls_context=self._tls_context,
        )
        await client.connect()
        return _Connection(client, self._per_connection)

    @contextlib.asynccontextmanager
    async def _connection(self, *, fresh: bool = False) -> AsyncIterator[tuple[_Connection, bool]]:
        """A connection to send one message on, and whether it was reused; returned to the pool only if the
        message went through, since after a failure the session's state is unknown."""
        async with self._slots:
            reused: _Connection | None = None
            while self._idle and reused is None and not fresh:
                candidate = self._idle.pop()
                if candidate.reusable():
                    reused = candidate
                else:
                    candidate.client.close()
            connection = reused or await self._connect()
            try:
                yield connection, reused is not None
            except BaseException:
                connection.client.close()
                raise
            connection.sent += 1
            connection.last_used = time.monotonic()
            if self._closed:
                await _quit(connection)
            else:
                self._idle.append(connection)

    async def _send_once(self, mail: _Mail) -> None:
        try:
            async with self._connection() as (connection, reused):
                try:
                    await mail.send(connection.client)
                except aiosmtplib.SMTPServerDisconnected as exc:
                    if reused:
                        raise _Stale from exc
                    raise
        except _Stale:
            # The server closed a kept-open connection since its last use: that says nothing about this
            # message, which gets one fresh connection before it counts as a failure.
            async with self._connection(fresh=True) as (connection, _):
                await mail.send(connection.client)

    async def send(self, message: EmailNotification) -> str | None:
        mail = self._compose(message)
        try:
            await self._send_once(mail)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = {str(err.code) for err in exc.recipients}
            permanent = all(code.startswith("5") for code in codes)
            error_type = PermanentDeliveryError if permanent else RetriableDeliveryError
            raise error_type(
                f"recipient refused: {', '.join(sorted(codes))}",
                reason=DeliveryReason.RECIPIENT_REFUSED,
                provider_code=",".join(sorted(codes)),
            ) from exc
        except aiosmtplib.SMTPNotSupported as exc:
            # An internationalized address to a server without SMTPUTF8: the next attempt would meet the same.
            raise PermanentDeliveryError(
                f"the server does not support SMTPUTF8 for an internationalized address: "
                f"{scrub(str(exc), message.to)}",
                reason=DeliveryReason.PROVIDER_REFUSED,
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx replies are final; 4xx (greylisting, mailbox busy, rate limits) are worth retrying. Servers
            # often quote the address ("<ada@…>: Recipient address rejected"): pseudonymized.
            text = scrub(exc.message, message.to)
            if 500 <= exc.code < 600:
                raise PermanentDeliveryError(
                    f"SMTP {exc.code}: {text}",
                    reason=DeliveryReason.PROVIDER_REFUSED,
                    provider_code=str(exc.code),
                ) from exc
            raise RetriableDeliveryError(
                f"SMTP {exc.code}: {text}",
                reason=DeliveryReason.PROVIDER_UNAVAILABLE,
                provider_code=str(exc.code),
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RetriableDeliveryError(
                f"SMTP connection failed: {type(exc).__name__}: {scrub(str(exc), message.to)}",
                reason=DeliveryReason.PROVIDER_UNAVAILABLE,
            ) from exc
        return mail.message_id

    async def aclose(self) -> None:
        """Say QUIT on every kept-open connection; one still sending is closed when its message is done."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(connection) for connection in idle))


async def _quit(connection: _Connection) -> None:
    try:
        await connection.client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        # Already dropped by the server, or not answering: closing our end is all there is left to do.
        connection.client.close()


def _text_header(value: str) -> str | Header:
    """Free text for a header: as it is where it reads back the same, RFC 2047-encoded otherwise (not ASCII,
    something a reader would decode as an encoded word, or a word too long to fold)."""
    if value.isascii() and "=?" not in value and all(len(word) <= 60 for word in value.split()):
        return value
    return Header(value, "utf-8", header_name="Subject")


def _body(text: str, subtype: str) -> Message:
    part = Message()
    part.set_payload(text, _BODY_CHARSET)
    part.set_type(f"text/{subtype}")
    return part
