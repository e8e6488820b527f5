"""A record held back until a given time, then forwarded unchanged to its target topic."""

from __future__ import annotations

import base64

from pydantic import AwareDatetime

from schemas.base import WireModel


class Scheduled(WireModel):
    due_at: AwareDatetime
    target: str  # an internal topic of Herald's (checked against the allow-list before forwarding)
    key_b64: str
    value_b64: str
    reason: str  # why it waits: "quiet_hours", "delay", "throttle", "digest"

    @classmethod
    def wrap(cls, due_at: AwareDatetime, target: str, key: bytes, value: bytes, reason: str) -> Scheduled:
        return cls(
            due_at=due_at,
            target=target,
            key_b64=base64.b64encode(key).decode(),
            value_b64=base64.b64encode(value).decode(),
            reason=reason,
        )

    @property
    def key(self) -> bytes:
        return base64.b64decode(self.key_b64)

    @property
    def value(self) -> bytes:
        return base64.b64decode(self.value_b64)
