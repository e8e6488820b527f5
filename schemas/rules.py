"""Routing rules: which event types reach which channels, through which templates."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from schemas.base import WireModel
from schemas.channels import Channel

TemplateName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", max_length=100)]


class ChannelRoute(WireModel):
    template: TemplateName


class Rule(WireModel):
    # `match` is an event type or a glob over event types (`order.*`); the most specific match wins.
    match: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.*?\[\]-]+$", max_length=200)]
    category: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]+$")] = "general"
    channels: Annotated[dict[Channel, ChannelRoute], Field(min_length=1)]


class RuleSet(WireModel):
    rules: list[Rule]
