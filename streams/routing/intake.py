"""The intake step: a domain event checked against the rules and fanned out, one routed record per distinct
recipient keyed by user id, so each meets its recipient's state on the worker that holds it. Each record
lists its one recipient: carrying them all would make fan-out grow with the square of their number."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from pydantic import ValidationError

from kernel.errors import InvalidEvent, TooManyRecipients
from schemas.base import describe_validation_error
from schemas.deadletter import DeadLetterStage
from schemas.events import DomainEvent, RecipientEvent
from streams.effects import Effects, Record
from streams.routing.result import StepResult, Tally, reject
from streams.routing.rules import RuleBook

STAGE = DeadLetterStage.INTAKE


def parse_event(raw: bytes | None) -> DomainEvent:
    if raw is None:
        raise InvalidEvent("empty message")
    try:
        return DomainEvent.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(describe_validation_error(exc)) from None


class Intake(NamedTuple):
    result: StepResult  # the routed records to produce, or the event's rejection
    here: RecipientEvent | None = None  # or the one recipient's event, for the route step to take at once


def intake(raw: bytes | None, rules: RuleBook, routed_topic: str, max_recipients: int) -> StepResult:
    """A record per recipient on `routed_topic`; or the event rejected whole (stage "intake")."""
    return take(raw, rules, routed_topic, max_recipients, here=_nowhere).result


def take(
    raw: bytes | None,
    rules: RuleBook,
    routed_topic: str,
    max_recipients: int,
    *,
    here: Callable[[str], bool],
) -> Intake:
    """As `intake`, except that an event for one recipient whose state is `here` (on the partition this event
    came in on, held by this worker) comes back as that recipient's event instead of a routed record: the
    hop through the routed topic (a produce, a fetch and a parse) would only bring it back to this worker
    and partition."""
    try:
        event = parse_event(raw)
        if len(event.recipients) > max_recipients:
            raise TooManyRecipients(
                f"recipients: {len(event.recipients)} listed, at most {max_recipients} allowed"
            )
        # Checked before fan-out so an unroutable event is one dead letter, not one per recipient.
        rules.match(event.type, event.data)
        recipients = list(dict.fromkeys(event.recipients))
        if len(recipients) == 1 and here(recipients[0]):
            return Intake(StepResult(Effects(), Tally()), for_one(event, recipients[0]))
        records = [Record.of(routed_topic, recipient, for_one(event, recipient)) for recipient in recipients]
    except Exception as exc:  # whatever the cause, the input is parked rather than retried forever
        return Intake(reject(exc, STAGE))
    return Intake(StepResult(Effects(records=records), Tally()))


def _nowhere(recipient: str) -> bool:
    return False


def for_one(event: DomainEvent, recipient: str) -> RecipientEvent:
    """The event as `recipient`'s routed record: its recipient list reduced to them."""
    # Models are frozen: an event already listing only them is shared, not copied.
    mine = event if event.recipients == [recipient] else event.model_copy(update={"recipients": [recipient]})
    return RecipientEvent(event=mine, recipient=recipient)
