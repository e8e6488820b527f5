"""Routing rules: which events reach which channels, through which templates, and how (conditions,
fallback, delay, digest, throttle, escalation). Published as one validated document to the compacted rules
topic."""

from __future__ import annotations

import itertools
import re
from datetime import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from schemas.base import WireModel
from schemas.channels import Channel
from schemas.events import Priority

TemplateName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", max_length=100)]
Category = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]+$", max_length=100)]
DataPath = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", max_length=200)]

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> int:
    """`90s`, `10m`, `1h30m`, `2d` → seconds."""
    found = _DURATION.match(text.strip())
    if not text.strip() or found is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 10m, 1h30m or 2d")
    days, hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


Duration = Annotated[str, StringConstraints(max_length=20)]


class ChannelRoute(WireModel):
    template: TemplateName


class Operator(StrEnum):
    EQ = "eq"
    NE = "ne"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    IN = "in"
    EXISTS = "exists"


class Condition(WireModel):
    """A test on the event's data: `{path: data.total, op: gt, value: 100}` (the `data.` prefix optional)."""

    path: DataPath
    op: Operator = Operator.EQ
    value: Any = None


class Digest(WireModel):
    """Collect a recipient's matching events and send one notification: after `window`, or at the next
    `until` local time in the recipient's timezone."""

    window: Duration | None = None
    until: time | None = None
    key: DataPath | None = None  # group by this data field too (e.g. a thread id); by event type otherwise

    @model_validator(mode="after")
    def _one_of(self) -> Digest:
        if (self.window is None) == (self.until is None):
            raise ValueError("a digest needs exactly one of window or until")
        if self.window is not None:
            parse_duration(self.window)
        return self


# A recipient's send record keeps at most this many send times per scope, so it stays far below the record
# budget; a limit above it could never be checked.
MAX_THROTTLE_LIMIT = 10_000


class Throttle(WireModel):
    """At most `limit` notifications per `per` for a recipient (on each channel, or for the category)."""

    limit: Annotated[int, Field(ge=1, le=MAX_THROTTLE_LIMIT)]
    per: Duration
    scope: Literal["channel", "category"] = "channel"
    excess: Literal["drop", "defer"] = "drop"

    @field_validator("per")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be longer than zero")
        return value


# One step per channel other than in-app, at most.
MAX_ESCALATION_STEPS = len(Channel) - 1


class EscalationStep(WireModel):
    """After `after` (counted from when the in-app notification goes out), send on `channel` unless the
    recipient has read the in-app notification by then."""

    after: Duration
    channel: Channel

    @field_validator("after")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be longer than zero")
        return value


EscalationSteps = Annotated[list[EscalationStep], Field(min_length=1, max_length=MAX_ESCALATION_STEPS)]


class Rule(WireModel):
    # `match` is an event type or a glob over event types (`order.*`); the most specific match wins.
    match: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.*?\[\]-]+$", max_length=200)]
    name: Annotated[str, StringConstraints(max_length=100)] | None = None
    when: list[Condition] = Field(default_factory=list)
    category: Category = "general"
    critical: bool | None = None  # None: critical when the category is one of the critical categories
    priority: Priority | None = None
    channels: Annotated[dict[Channel, ChannelRoute], Field(min_length=1)]
    # With a fallback list, the recipient gets the first of these channels they can be reached on, instead
    # of every channel in `channels` (e.g. push, else SMS, else email).
    fallback: list[Channel] | None = None
    delay: Duration | None = None
    digest: Digest | None = None
    throttle: Throttle | None = None
    # In-app at once, then each step's channel in turn unless the in-app notification was read by then.
    escalate: EscalationSteps | None = None
    # Event data fields the in-app notification carries to the client as `data` (`order_id`, `order.url`; the
    # `data.` prefix optional), beside what its templates render. Nothing else of the event's data leaves.
    public: Annotated[list[DataPath], Field(max_length=50)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.fallback is not None:
            unknown = [c.value for c in self.fallback if c not in self.channels]
            if unknown:
                raise ValueError(f"fallback names channels without a template: {', '.join(unknown)}")
        if self.delay is not None:
            parse_duration(self.delay)
        if self.escalate is not None:
            _check_escalation(self, self.escalate)
        return self


def _check_escalation(rule: Rule, steps: list[EscalationStep]) -> None:
    if Channel.INAPP not in rule.channels:
        raise ValueError("escalate needs the inapp channel: its notification being read cancels the steps")
    if rule.digest is not None or rule.fallback is not None:
        raise ValueError("escalate cannot be combined with digest or fallback")
    channels = [step.channel for step in steps]
    if Channel.INAPP in channels:
        raise ValueError("escalate steps are for channels other than inapp")
    unknown = [c.value for c in channels if c not in rule.channels]
    if unknown:
        raise ValueError(f"escalate names channels without a template: {', '.join(unknown)}")
    if len(set(channels)) != len(channels):
        raise ValueError("escalate names a channel more than once")
    afters = [parse_duration(step.after) for step in steps]
    if any(later <= earlier for earlier, later in itertools.pairwise(afters)):
        raise ValueError("escalate steps' `after` must increase from one step to the next")


class RuleSet(WireModel):
    rules: list[Rule]
