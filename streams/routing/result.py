"""What a routing step returns: the effects to apply and what its agent should count (bounded metric label
values), so a step holds no metric objects and a test can read both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from schemas.channels import Channel
from schemas.deadletter import DeadLetterReason, DeadLetterStage
from schemas.reasons import DecisionReason, RejectReason, reason_of
from streams.effects import Effects, Rejected


@dataclass
class Tally:
    """Metric label values, one entry per increment."""

    rejected: list[DeadLetterReason] = field(default_factory=list)  # herald_events_rejected_total{reason}
    routed: list[Channel] = field(default_factory=list)  # herald_notifications_routed_total{channel}
    # …_deferred_total{channel, reason} and …_skipped_total{channel, reason} (a template error skips one)
    deferred: list[tuple[Channel, DecisionReason]] = field(default_factory=list)
    skipped: list[tuple[Channel, DecisionReason | RejectReason]] = field(default_factory=list)


class StepResult(NamedTuple):
    effects: Effects
    tally: Tally


def reject(error: BaseException, stage: DeadLetterStage) -> StepResult:
    """The input goes to the dead-letter topic, counted as a rejected event under the error's reason."""
    return StepResult(Effects(rejected=[Rejected(error, stage)]), Tally(rejected=[reason_of(error)]))
