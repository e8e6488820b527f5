"""uvicorn's request lines without their query strings, on the gateway and the worker's ops endpoint alike.

A WebSocket URL may carry a token (`/ws?token=…`) in whatever percent-encoding the client chose, and the
server decodes it before looking it up; a pattern over the raw text would have to decode exactly as the server
does to catch every form. So the query string is never logged at all: no parser is left to disagree with."""

from __future__ import annotations

import logging
import re
from typing import Final

from kernel.logs import REDACTED

UVICORN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# A request target in a formatted line: a path, then `?` and the query up to the next whitespace (a request
# target cannot hold whitespace, whatever else it holds: quotes, `&`, escapes).
_TARGET = re.compile(r"(/[^\s?]*)\?\S*")


def without_query(target: str) -> str:
    """`/ws?token=…` → `/ws?[redacted]`; anything else unchanged."""
    return _TARGET.sub(rf"\1?{REDACTED}", target)


def _arg(value: object) -> object:
    if isinstance(value, str) and value.startswith("/") and "?" in value:
        # uvicorn passes the path and query as one argument: cut it whole at the first `?`.
        return f"{value.partition('?')[0]}?{REDACTED}"
    return value


class QueryStringFilter(logging.Filter):
    """Drops the query string from a record's message and from each path-like argument."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = without_query(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_arg(arg) for arg in record.args)
        return True


def install(*logger_names: str) -> None:
    """Attach the filter to the named loggers (uvicorn's by default), once each. A logger's filters see only
    records logged on it, not its children's, so each logger is named. Call it after `uvicorn.Config`, which
    applies uvicorn's logging configuration."""
    for name in logger_names or UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, QueryStringFilter) for existing in logger.filters):
            logger.addFilter(QueryStringFilter())
