"""What a routing step returns: the effects to apply and what its agent should count (bounded metric label
values), so a step holds no metric objects and a test can read both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from schemas.channels import Channel
from streams.effects import Effects, Rejected


@dataclass
class Tally:
    """Metric label values, one entry per increment."""

    rejected: list[str] = field(default_factory=list)  # herald_events_rejected_total{reason}
    routed: list[Channel] = field(default_factory=list)  # herald_notifications_routed_total{channel}
    deferred: list[tuple[Channel, str]] = field(default_factory=list)  # …_deferred_total{channel, reason}
    skipped: list[tuple[Channel, str]] = field(default_factory=list)  # …_skipped_total{channel, reason}


class StepResult(NamedTuple):
    effects: Effects
    tally: Tally


def reject(error: BaseException, stage: str) -> StepResult:
    """The input goes to the dead-letter topic, counted as a rejected event under the error's reason."""
    reason = getattr(error, "reason", "internal_error")
    return StepResult(Effects(rejected=[Rejected(error, stage)]), Tally(rejected=[reason]))
