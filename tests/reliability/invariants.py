"""The invariants every reliability case checks, over everything a case produced: each (event, recipient,
channel) that should be delivered is delivered at its provider or dead-lettered with a reason (none lost),
nothing else is delivered, and nothing reaches a person twice unless a crash fell between the provider's
acceptance and Herald's record of it (each such duplicate is counted as explained)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.channels import Channel
from schemas.deadletter import DeadLetter
from schemas.notifications import notification_id
from schemas.status import DeliveryStatus, Outcome

# Which channels each event type of examples/rules.yaml reaches.
CHANNELS_BY_TYPE: dict[str, tuple[Channel, ...]] = {
    "order.shipped": (Channel.INAPP, Channel.EMAIL),
    "order.delayed": (Channel.INAPP,),
    "password.reset": (Channel.EMAIL,),
    "security.login": (Channel.PUSH, Channel.SMS, Channel.EMAIL),
}
# The suite's event ids: a case tag and a number. SMS carries no notification id, so its text (which shows
# `data.device`, set to the event id) is how a provider's record is traced back to its event.
EVENT_ID = re.compile(r"E[0-9a-f]{8}-\d+")
NOTIFICATION_ID = re.compile(r"ntf_[0-9a-f]{32}")


@dataclass(frozen=True)
class Expected:
    notification_id: str
    event_id: str
    recipient: str
    channel: Channel


def expected_notifications(
    events: Iterable[Mapping[str, Any]], profiles: Mapping[str, Mapping[str, Any]]
) -> dict[str, Expected]:
    """What should reach someone: every channel of the event's rule, for each recipient with a profile that
    has the channel's address (the suite's profiles have all of them)."""
    expected: dict[str, Expected] = {}
    for event in events:
        key = event.get("idempotency_key") or event["event_id"]
        for recipient in dict.fromkeys(event["recipients"]):
            if recipient not in profiles:
                continue
            for channel in CHANNELS_BY_TYPE[event["type"]]:
                nid = notification_id(key, recipient, channel)
                expected[nid] = Expected(nid, event["event_id"], recipient, channel)
    return expected


@dataclass
class Observed:
    """What came out: deliveries as each provider recorded them, dead letters and status records."""

    deliveries: Counter[str] = field(default_factory=Counter)  # notification id -> times accepted
    channel_of: dict[str, Channel] = field(default_factory=dict)
    untraceable: list[str] = field(default_factory=list)  # provider records with no known notification
    inapp_topic: Counter[str] = field(default_factory=Counter)  # records on the in-app topic, by id
    dead_letters: list[DeadLetter] = field(default_factory=list)
    statuses: list[DeliveryStatus] = field(default_factory=list)
    malformed_dead_letters: list[str] = field(default_factory=list)  # DLQ records their schema refuses

    def deliver(self, nid: str | None, channel: Channel, what: str) -> None:
        if nid is None:
            self.untraceable.append(f"{channel.value}: {what[:200]}")
            return
        self.deliveries[nid] += 1
        self.channel_of[nid] = channel


def dead_lettered_ids(letter: DeadLetter, expected: Mapping[str, Expected]) -> set[str]:
    """The notifications a dead letter stands for: one notification, one recipient's channels, or a whole
    event's (an event refused at intake)."""
    try:
        original = json.loads(letter.original)
    except (ValueError, RecursionError):
        return set()
    if not isinstance(original, dict):
        return set()
    if isinstance(original.get("notification_id"), str):
        return {original["notification_id"]}
    if isinstance(original.get("event"), dict) and isinstance(original.get("recipient"), str):
        event_id, recipients = original["event"].get("event_id"), {original["recipient"]}
    else:
        listed = original.get("recipients")
        event_id = original.get("event_id")
        recipients = {r for r in listed if isinstance(r, str)} if isinstance(listed, list) else set()
    if not isinstance(event_id, str):
        return set()
    only = letter.stage.partition(".")[2]  # "route.email": that channel only
    return {
        nid
        for nid, item in expected.items()
        if item.event_id == event_id
        and item.recipient in recipients
        and (not only or item.channel.value == only)
    }


@dataclass
class Figures:
    case: str
    events: int
    expected: int
    delivered: int
    dead_lettered: int
    lost: int
    duplicated: int
    duplicates_explained: int
    unexpected: int
    delivered_and_dead_lettered: int
    malformed_dead_letters: int
    inapp_topic_replays: int  # in-app records produced twice; the gateway keeps one per notification id
    dlq_reasons: dict[str, int]
    faults_injected: dict[str, int] = field(default_factory=dict)
    hostile_inputs: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    lost_sample: list[str] = field(default_factory=list)
    unexpected_sample: list[str] = field(default_factory=list)
    duplicated_sample: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{self.lost} lost, e.g. {self.lost_sample}")
        if self.unexpected:
            found.append(f"{self.unexpected} delivered that should not be, e.g. {self.unexpected_sample}")
        if self.duplicated != self.duplicates_explained:
            found.append(
                f"{self.duplicated - self.duplicates_explained} unexplained duplicates, "
                f"e.g. {self.duplicated_sample}"
            )
        if self.malformed_dead_letters:
            found.append(f"{self.malformed_dead_letters} DLQ records do not match schemas.deadletter")
        if self.delivered_and_dead_lettered:
            found.append(f"{self.delivered_and_dead_lettered} both delivered and dead-lettered")
        return found


def check(
    case: str,
    events: int,
    expected: Mapping[str, Expected],
    observed: Observed,
    *,
    crash_window: bool = False,
) -> Figures:
    """Compare; a duplicate is explained only when a crash was injected and Herald's status topic holds fewer
    `delivered` records for the notification than the provider accepted (the crash fell in between)."""
    delivered = {nid for nid in observed.deliveries if nid in expected}
    delivered |= {nid for nid in observed.inapp_topic if nid in expected}
    dead: dict[str, str] = {}
    for letter in observed.dead_letters:
        for nid in dead_lettered_ids(letter, expected):
            dead.setdefault(nid, letter.reason)
    lost = [nid for nid in expected if nid not in delivered and nid not in dead]
    unexpected = [nid for nid in observed.deliveries if nid not in expected] + observed.untraceable
    recorded = Counter(s.notification_id for s in observed.statuses if s.outcome == Outcome.DELIVERED)
    duplicated = {nid: n for nid, n in observed.deliveries.items() if n > 1}
    explained = {nid for nid, n in duplicated.items() if crash_window and recorded[nid] < n}
    return Figures(
        case=case,
        events=events,
        expected=len(expected),
        delivered=len(delivered - set(dead)),
        dead_lettered=len(set(dead) & set(expected)),
        lost=len(lost),
        duplicated=sum(n - 1 for n in duplicated.values()),
        duplicates_explained=sum(duplicated[nid] - 1 for nid in explained),
        unexpected=len(unexpected),
        delivered_and_dead_lettered=len(delivered & set(dead)),
        malformed_dead_letters=len(observed.malformed_dead_letters),
        inapp_topic_replays=sum(n - 1 for n in observed.inapp_topic.values() if n > 1),
        dlq_reasons=dict(Counter(dead[nid] for nid in dead if nid in expected)),
        lost_sample=[
            f"{expected[n].event_id}/{expected[n].recipient}/{expected[n].channel}" for n in lost[:5]
        ],
        unexpected_sample=[str(x) for x in unexpected[:5]],
        duplicated_sample=[
            f"{observed.channel_of[nid].value} {nid} x{n} ({recorded[nid]} recorded)"
            for nid, n in list(d for d in duplicated.items() if d[0] not in explained)[:5]
        ],
    )
