"""The dead-letter record: what could not be processed, where it came from, and why."""

from __future__ import annotations

import base64

from pydantic import AwareDatetime

from schemas.base import WireModel


class DeadLetter(WireModel):
    topic: str
    partition: int
    offset: int
    key_b64: str | None = None
    original_b64: str  # the message bytes exactly as consumed, base64 so any bytes survive JSON
    # Set when the original was too large to carry whole: original_b64 then holds its head, and topic,
    # partition and offset say where the whole of it is.
    original_truncated: bool = False
    reason: str  # a short machine-readable reason, also the metric label: "invalid_event", "no_rule", ...
    detail: (
        str  # what a person needs to fix it: the field at fault, the template error, the provider's answer
    )
    error_class: str
    stage: str  # the agent that gave up: "router", "email", ...
    at: AwareDatetime

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)
