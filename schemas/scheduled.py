"""A record held back until a given time, then forwarded unchanged to its target topic."""

from __future__ import annotations

import base64

from pydantic import AwareDatetime, field_validator

from schemas.base import Member, WireModel
from schemas.reasons import DecisionReason


class Scheduled(WireModel):
    due_at: AwareDatetime
    target: str  # an internal topic of Herald's (checked against the allow-list before forwarding)
    key_b64: str
    value_b64: str
    reason: Member[DecisionReason]  # why it waits: one of DEFER_REASONS

    @field_validator("reason", mode="before")
    @classmethod
    def _renamed(cls, value: object) -> object:
        # Records held before the throttle's reason was named `throttled` may still wait on the tier topics.
        return DecisionReason.THROTTLED if value == "throttle" else value

    @classmethod
    def wrap(
        cls, due_at: AwareDatetime, target: str, key: bytes, value: bytes, reason: DecisionReason
    ) -> Scheduled:
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
