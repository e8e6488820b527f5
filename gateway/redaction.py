"""Keeps `?token=` out of the logs: uvicorn logs each WebSocket handshake's path with its query string."""

from __future__ import annotations

import logging
import re

_TOKEN_PARAM = re.compile(r"((?:^|[?&])token=)[^&\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    return _TOKEN_PARAM.sub(r"\1[redacted]", text)


class TokenRedactingFilter(logging.Filter):
    """Rewrites a record's message and string arguments so no query-string token survives."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def install(*logger_names: str) -> None:
    """Attach the filter to the named loggers, once each."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, TokenRedactingFilter) for existing in logger.filters):
            logger.addFilter(TokenRedactingFilter())
