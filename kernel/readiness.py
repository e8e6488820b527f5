"""Whether a process (or one of its parts) is ready to serve, and if not, why: one shape for /readyz."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str  # shown to operators as is: never personal data
    # Fields for /readyz beside `ready` and `reason`, e.g. {"recovery": {...}}: counts, never personal data.
    detail: Mapping[str, Any] = field(default_factory=dict, hash=False)


READY = Readiness(True, "ready")
