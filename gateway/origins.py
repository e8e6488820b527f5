"""The browser origin allow-list: which pages may open sockets to the gateway."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from kernel.errors import ConfigurationError

Origin = tuple[str, str, int]  # scheme, host, port: what a browser's `Origin` header names

_DEFAULT_PORT: Final = {"http": 80, "https": 443}
# The scheme of a page served over the same connection kind as a socket's.
_PAGE_SCHEME: Final = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def parse_origin(text: str) -> Origin | None:
    """`scheme://host[:port]` as browsers send it, the port made explicit; None for anything else (`null`,
    paths, credentials, other schemes)."""
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT or parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    if not host:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORT[scheme]


class OriginPolicy:
    """Allows clients that send no `Origin` (not browsers) and browser pages whose origin (scheme, host and
    port) is listed, or any (`*`). With none listed, only pages this gateway served itself (the demo page):
    the same host and port as the request's `Host` and the scheme of the connection. Tokens are not cookies,
    so this guards against token reuse by other sites' scripts rather than cross-site request forgery."""

    def __init__(self, allowed: frozenset[Origin], *, any_origin: bool = False) -> None:
        self._allowed = allowed
        self._any = any_origin

    @classmethod
    def parse(cls, setting: str) -> OriginPolicy:
        """From HERALD_GATEWAY_ALLOWED_ORIGINS: comma-separated `scheme://host[:port]`, or `*`."""
        entries = [entry.strip().rstrip("/") for entry in setting.split(",") if entry.strip()]
        allowed = set()
        for entry in entries:
            if entry == "*":
                continue
            origin = parse_origin(entry)
            if origin is None:
                raise ConfigurationError(
                    f"HERALD_GATEWAY_ALLOWED_ORIGINS: {entry!r} is not an origin like https://app.example.com"
                )
            allowed.add(origin)
        return cls(frozenset(allowed), any_origin="*" in entries)

    def allows(self, origin: str | None, host: str | None, scheme: str) -> bool:
        """`origin` and `host` are the request's headers; `scheme` its own (`ws` or `wss`, as the server saw
        it: behind a TLS-terminating proxy, list the public origin)."""
        if origin is None or self._any:
            return True
        seen = parse_origin(origin)
        if seen is None:
            return False
        if self._allowed:
            return seen in self._allowed
        return host is not None and seen == _own_origin(host, scheme)


def _own_origin(host: str, scheme: str) -> Origin | None:
    page_scheme = _PAGE_SCHEME.get(scheme.lower())
    if page_scheme is None:
        return None
    return parse_origin(f"{page_scheme}://{host}")
