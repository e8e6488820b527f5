"""Whether a process (or one of its parts) is ready to serve, and if not, why: one shape for /readyz."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str  # shown to operators as is: never personal data


READY = Readiness(True, "ready")
