"""What travels on `herald.routed` (keyed by recipient): an event for one recipient, a digest's release, or
an escalation step that has come due. The step lives here rather than beside the other two in
`schemas.events` because it carries a rule, and the rules import the events."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from schemas.base import WireModel
from schemas.channels import Channel
from schemas.events import DigestRelease, DomainEvent, Identifier, RecipientEvent, UserId
from schemas.rules import Rule


class EscalationDue(WireModel):
    """A step of a rule's `escalate`, held on the scheduler until its time: send the event on the one channel
    of `rule` unless the recipient has read the in-app notification `watch` by then."""

    kind: Literal["escalation"] = "escalation"
    recipient: UserId
    event: DomainEvent
    # The rule as it was when the event was routed, narrowed to the step's channel: a ruleset published in
    # between changes neither the template nor the preferences' category of a step already on its way.
    rule: Rule
    watch: Identifier

    @model_validator(mode="after")
    def _one_channel(self) -> EscalationDue:
        if len(self.rule.channels) != 1 or Channel.INAPP in self.rule.channels:
            raise ValueError("an escalation step's rule names one channel, not inapp")
        return self

    @property
    def channel(self) -> Channel:
        return next(iter(self.rule.channels))


Routed = Annotated[RecipientEvent | DigestRelease | EscalationDue, Field(discriminator="kind")]
