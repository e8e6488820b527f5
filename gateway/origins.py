"""The browser origin allow-list: which pages may open sockets to the gateway."""

from __future__ import annotations

from urllib.parse import urlsplit

from kernel.errors import ConfigurationError


class OriginPolicy:
    """Allows clients that send no `Origin` (not browsers), pages served by the gateway itself, and the
    listed origins (`*`: any). Tokens are not cookies, so this guards against token reuse by other sites'
    scripts rather than cross-site request forgery."""

    def __init__(self, allowed: frozenset[str], *, any_origin: bool = False) -> None:
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
            parts = urlsplit(entry)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise ConfigurationError(
                    f"HERALD_GATEWAY_ALLOWED_ORIGINS: {entry!r} is not an origin like https://app.example.com"
                )
            allowed.add(f"{parts.scheme}://{parts.netloc}".lower())
        return cls(frozenset(allowed), any_origin="*" in entries)

    def allows(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self._any:
            return True
        origin = origin.lower()
        if origin in self._allowed:
            return True
        # Same origin: the page was served by this gateway (the demo page, for one).
        return host is not None and urlsplit(origin).netloc == host.lower()
