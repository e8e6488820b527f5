"""What a user may choose in the preference center: the categories the rules define, each with the channels
its rules send on, and which of those routing sends whatever the user chooses (critical rules)."""

from __future__ import annotations

from collections.abc import Iterable

from schemas.channels import Channel
from schemas.preference_center import OfferedCategory, OfferedChannel
from schemas.rules import Rule
from streams.routing.preferences import is_critical


def offered(rules: Iterable[Rule]) -> list[OfferedCategory]:
    """Categories by name, channels in `Channel` order. A channel is locked when every rule of the category
    that sends on it is critical (`decide` ignores opt-outs there); a category, when all its rules are."""
    critical_by_channel: dict[str, dict[Channel, bool]] = {}
    for rule in rules:
        channels = critical_by_channel.setdefault(rule.category, {})
        critical = is_critical(rule)
        for channel in rule.channels:
            channels[channel] = channels.get(channel, True) and critical
    return [
        OfferedCategory(
            category=category,
            locked=all(by_channel.values()),
            channels=[
                OfferedChannel(channel=channel, locked=by_channel[channel])
                for channel in Channel
                if channel in by_channel
            ],
        )
        for category, by_channel in sorted(critical_by_channel.items())
    ]
