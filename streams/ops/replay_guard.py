"""The bounce webhook's memory of the signed requests it has taken, so a captured request is not taken again
within the window its signed timestamp is accepted in. It lives in one worker process (docs/SECURITY.md)."""

from __future__ import annotations

import hashlib
import heapq
from typing import Final

# Requests remembered at most (a few hundred bytes each): far more than SendGrid posts to one worker within a
# tolerance window.
DEFAULT_CAPACITY: Final = 100_000


class ReplayMemoryFull(Exception):
    """Every slot holds a request still inside its window: taking a new one would mean forgetting one that can
    still be replayed. The caller answers 503, so SendGrid retries later."""


class ReplayGuard:
    """Remembers a digest of each request's signed content (the timestamp header, then the body: exactly the
    bytes the signature covers) until its timestamp leaves the tolerance window, after which a replay is
    refused as stale anyway. The signature itself is not the key: ECDSA signatures are malleable ((r, s) and
    (r, n - s) both verify), so a rewritten signature would pass for a new request."""

    def __init__(self, tolerance_seconds: float, *, capacity: int = DEFAULT_CAPACITY) -> None:
        self._tolerance = tolerance_seconds
        self._capacity = capacity
        self._expiry: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def claim(self, timestamp: str, body: bytes, *, now: float) -> bool:
        """True the first time this signed content is seen within its window; False for a replay."""
        self._forget_expired(now)
        digest = _digest(timestamp, body)
        if digest in self._expiry:
            return False
        if len(self._expiry) >= self._capacity:
            raise ReplayMemoryFull()
        expires = int(timestamp) + self._tolerance
        self._expiry[digest] = expires
        heapq.heappush(self._heap, (expires, digest))
        return True

    def release(self, timestamp: str, body: bytes) -> None:
        """Forget a claim whose request was not taken after all (answered 5xx, so it may come again)."""
        self._expiry.pop(_digest(timestamp, body), None)  # its heap entry goes when it expires

    def _forget_expired(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            expires, digest = heapq.heappop(self._heap)
            if self._expiry.get(digest) == expires:
                del self._expiry[digest]


def _digest(timestamp: str, body: bytes) -> bytes:
    return hashlib.sha256(timestamp.encode("ascii") + body).digest()
