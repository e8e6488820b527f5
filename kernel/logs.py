"""Structured logging: JSON lines off a terminal, readable lines on one, secrets redacted before output;
`worker_logging_config` for Faust's worker and `gateway_logging_config` for uvicorn."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import unquote

from pydantic import SecretStr

from kernel.privacy import scrub
from kernel.settings import Settings

REDACTED = "[redacted]"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)
# A query parameter whose name, once percent-decoded, ends in "token" (`token=`, `%74oken=`, `token%3D`, …).
_PARAM = re.compile(r"((?:^|[?&\s;])([A-Za-z0-9_.~%-]+)(?:=|%3D))([^&\s\"']+)", re.IGNORECASE)
# A JWT: base64url JSON header (so it opens with `eyJ`, from `{"`), payload, signature.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# A run of URL characters holding at least one percent escape: decoded before it is looked at.
_ESCAPED_RUN = re.compile(r"[A-Za-z0-9_.~%+-]*%[0-9A-Fa-f]{2}[A-Za-z0-9_.~%+-]*")
_AUTHORIZATION = re.compile(
    r"""(authorization['"]?\s*[:=]\s*['"]?)(?:(bearer|basic|token)\s+)?[^\s'",}]+""", re.IGNORECASE
)


def secrets_of(settings: Settings) -> list[str]:
    """Every SecretStr value in the settings (API keys, passwords, the JWT secret)."""
    values = (getattr(settings, name) for name in type(settings).model_fields)
    return [value.get_secret_value() for value in values if isinstance(value, SecretStr)]


class Redactor:
    """Replaces known secret values, `token=` query values and Authorization header values; email addresses
    and phone numbers become their pseudonyms."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole. Very short values would
        # redact ordinary words, so they are left out (no real key is that short).
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        # Tokens in any encoding: percent-escaped runs are judged decoded, so `%65yJ…` or `%74oken=` cannot
        # slip past the plain patterns below.
        text = _ESCAPED_RUN.sub(_redact_escaped, text)
        text = _JWT.sub(REDACTED, text)
        text = _PARAM.sub(_redact_token_param, text)
        text = _AUTHORIZATION.sub(
            lambda m: f"{m.group(1)}{m.group(2) + ' ' if m.group(2) else ''}{REDACTED}", text
        )
        # Where Herald names a person it writes a pseudonym already; an address or number that slips into a
        # line anyway (an exception's text, a traceback) is logged as its pseudonym too (kernel/privacy.py).
        return scrub(text)


def _decoded(text: str) -> str:
    """Percent-decoded until nothing changes (at most three times: `%2574` is `%74` is `t`)."""
    for _ in range(3):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def _redact_escaped(match: re.Match[str]) -> str:
    decoded = _decoded(match.group(0))
    if _JWT.search(decoded) or re.search(r"token=", decoded, re.IGNORECASE):
        return REDACTED
    return match.group(0)


def _redact_token_param(match: re.Match[str]) -> str:
    if _decoded(match.group(2)).lower().endswith("token"):
        return f"{match.group(1)}{REDACTED}"
    return match.group(0)


class RedactingFilter(logging.Filter):
    """Formats the message once, redacted, and redacts string fields passed with `extra=`."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = self._redact(message), None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, self._redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._redact(logging.Formatter().formatException(record.exc_info))
        return True


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """`12:00:00.123 INFO herald.worker: message key=value …`, for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if not extras:
            return line
        head, sep, tail = line.partition("\n")
        fields = " ".join(f"{k}={v}" for k, v in extras.items())
        return f"{head} {fields}{sep}{tail}"


def build_handler(
    secrets: Iterable[str] = (), stream: IO[str] | None = None, *, json_lines: bool | None = None
) -> logging.Handler:
    """A stream handler (stderr by default): JSON unless the stream is a terminal, redacting first."""
    stream = sys.stderr if stream is None else stream
    if json_lines is None:
        isatty = getattr(stream, "isatty", None)
        json_lines = not (callable(isatty) and isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else HumanFormatter())
    handler.addFilter(RedactingFilter(Redactor(secrets)))
    return handler


def worker_logging_config(settings: Settings) -> dict[str, Any]:
    """For `faust.App(..., logging_config=...)`: mode merges it into its own configuration, so the
    worker's `-l` level still applies, and replaces its "default" handler, so Faust's lines are JSON too."""
    secrets = secrets_of(settings)
    return {
        "merge": True,
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"default": {"()": lambda: build_handler(secrets)}},
        # aiokafka builds a debug record for every message it sends: costly on the hot path, and of no use
        # at the levels a worker runs at. Twilio's client logs every request, headers included, at INFO: ten
        # lines per SMS that say nothing the "delivered" line does not.
        "loggers": {"aiokafka": {"level": "WARNING"}, "twilio.http_client": {"level": "WARNING"}},
    }


def gateway_logging_config(settings: Settings, level: str = "INFO") -> dict[str, Any]:
    """For `uvicorn.Config(..., log_config=...)`: uvicorn's loggers and Herald's share one handler."""
    secrets = secrets_of(settings)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"default": {"()": lambda: build_handler(secrets)}},
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": level}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
        "root": {"handlers": ["default"], "level": level},
    }
