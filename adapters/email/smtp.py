"""Email over SMTP with aiosmtplib: plain, STARTTLS or implicit TLS, optional login."""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from schemas.notifications import EmailNotification
from streams.errors import PermanentDeliveryError, RetriableDeliveryError
from streams.settings import Settings, SmtpTls


class SmtpEmailSender:
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
    ) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._sender = sender
        self._username = username
        self._password = password
        self._timeout = timeout
        self._tls_context = tls_context

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpEmailSender:
        assert settings.smtp_host is not None
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            tls=settings.smtp_tls,
            sender=settings.email_from,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout=settings.smtp_timeout_seconds,
        )

    def _compose(self, message: EmailNotification) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self._sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(localtime=False)
        # The notification id doubles as the Message-ID's left part, so a resend after a crash is
        # recognisable as the same message by the receiving side.
        mail["Message-ID"] = make_msgid(idstring=message.notification_id, domain="herald")
        mail["X-Herald-Notification-Id"] = message.notification_id
        mail.set_content(message.text)
        if message.html is not None:
            mail.add_alternative(message.html, subtype="html")
        return mail

    async def send(self, message: EmailNotification) -> str | None:
        mail = self._compose(message)
        try:
            await aiosmtplib.send(
                mail,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                use_tls=self._tls is SmtpTls.IMPLICIT,
                start_tls=True if self._tls is SmtpTls.STARTTLS else False,
                timeout=self._timeout,
                tls_context=self._tls_context,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = {str(err.code) for err in exc.recipients}
            permanent = all(code.startswith("5") for code in codes)
            error_type = PermanentDeliveryError if permanent else RetriableDeliveryError
            raise error_type(
                f"recipient refused: {', '.join(sorted(codes))}",
                reason="recipient_refused",
                provider_code=",".join(sorted(codes)),
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx replies are final; 4xx (greylisting, mailbox busy, rate limits) are worth retrying.
            if 500 <= exc.code < 600:
                raise PermanentDeliveryError(
                    f"SMTP {exc.code}: {exc.message}", reason="provider_refused", provider_code=str(exc.code)
                ) from exc
            raise RetriableDeliveryError(
                f"SMTP {exc.code}: {exc.message}", reason="provider_unavailable", provider_code=str(exc.code)
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RetriableDeliveryError(
                f"SMTP connection failed: {type(exc).__name__}: {exc}", reason="provider_unavailable"
            ) from exc
        return str(mail["Message-ID"])
