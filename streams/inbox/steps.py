"""What the inbox does with each record, as effects: a notification is kept (or refused, or found to be a
replay), a client's command changes read/archived state; each publishes what changed on the feed and says
so on `herald.status`. No broker, no Faust: `Reader` is the `inbox` table's lookup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from kernel.errors import InvalidEvent, RecordTooLarge
from schemas.base import describe_validation_error
from schemas.channels import Channel
from schemas.deadletter import DeadLetterStage
from schemas.frames import Item, notification_frame, update_frame
from schemas.inbox import FeedHeader, FeedKind, InboxAction, InboxCommand
from schemas.notifications import InAppNotification
from schemas.reasons import DecisionReason, RejectReason
from schemas.status import DeliveryStatus, Outcome
from streams.effects import Effects, Record, Rejected, TableWrite
from streams.inbox.model import ARCHIVED, READ, Index, Line, entry_key

Reader = Callable[[str], Any]  # a key of the `inbox` table → its stored value, or None

PROVIDER = "inbox"  # the `provider` of an in-app notification's statuses

FLAGS: dict[InboxAction, tuple[int, bool]] = {
    InboxAction.MARK_READ: (READ, True),
    InboxAction.MARK_UNREAD: (READ, False),
    InboxAction.ARCHIVE: (ARCHIVED, True),
    InboxAction.UNARCHIVE: (ARCHIVED, False),
}


@dataclass(frozen=True, slots=True)
class InboxPolicy:
    capacity: int  # HERALD_INBOX_SIZE
    retention_ms: int  # HERALD_INBOX_RETENTION_DAYS
    max_bytes: int  # HERALD_INAPP_MAX_BYTES
    feed_topic: str


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _feed(
    policy: InboxPolicy, user_id: str, seq: int, kind: FeedKind, frame: bytes, command: str | None
) -> Record:
    headers: tuple[tuple[str, bytes], ...] = (
        (FeedHeader.SEQ, str(seq).encode()),
        (FeedHeader.KIND, kind.encode()),
    )
    if command is not None:
        headers += ((FeedHeader.COMMAND, command.encode()),)
    return Record(policy.feed_topic, user_id.encode(), frame, headers=headers)


def _dropped(user_id: str, lines: list[Line]) -> list[TableWrite]:
    return [TableWrite("inbox", entry_key(user_id, line.notification_id), None) for line in lines]


def store(policy: InboxPolicy, read: Reader, raw: bytes, now: datetime) -> Effects:
    """Keep an in-app notification in its recipient's inbox and push it; a replay changes nothing."""
    try:
        notification = InAppNotification.model_validate_json(raw)
    except ValidationError as exc:
        error = InvalidEvent(describe_validation_error(exc), reason=RejectReason.INVALID_NOTIFICATION)
        return Effects(rejected=[Rejected(error, DeadLetterStage.INAPP)])
    if len(raw) > policy.max_bytes:
        too_large = RecordTooLarge(
            f"the in-app notification is {len(raw)} bytes, over HERALD_INAPP_MAX_BYTES ({policy.max_bytes})"
        )
        return Effects(rejected=[Rejected(too_large, DeadLetterStage.INAPP)])
    user_id, notification_id = notification.recipient, notification.notification_id
    index = Index.load(read(user_id))
    if index.find(notification_id) is not None:
        return Effects()  # a replay (or a duplicate upstream): kept and pushed once
    created_ms = _ms(notification.created_at)
    oldest_ms = _ms(now) - policy.retention_ms
    if created_ms < oldest_ms:
        # Already past the retention: it would be pruned at once. Said so, rather than dropped unseen.
        expired = DeliveryStatus.of(
            notification, Channel.INAPP, PROVIDER, Outcome.SKIPPED, now, reason=DecisionReason.EXPIRED
        )
        return Effects(statuses=[expired])
    gone = index.expire(oldest_ms) + index.add(notification_id, created_ms, policy.capacity)
    index.advance(_ms(now))
    frame = notification_frame(raw, unread=index.unread())
    latency = max(0.0, (now - notification.created_at).total_seconds())
    delivered = DeliveryStatus.of(
        notification, Channel.INAPP, PROVIDER, Outcome.DELIVERED, now, latency=latency
    )
    return Effects(
        records=[_feed(policy, user_id, index.seq, FeedKind.NOTIFICATION, frame, None)],
        statuses=[delivered],
        writes=[
            TableWrite("inbox", user_id, index.dump()),
            TableWrite("inbox", entry_key(user_id, notification_id), raw.decode()),
            *_dropped(user_id, gone),
        ],
    )


def apply(policy: InboxPolicy, read: Reader, raw: bytes, now: datetime) -> Effects:
    """Apply a client's command; the feed answers it (`herald-command`) whether or not it changed anything."""
    try:
        command = InboxCommand.model_validate_json(raw)
    except ValidationError as exc:
        error = InvalidEvent(describe_validation_error(exc), reason=RejectReason.INVALID_COMMAND)
        return Effects(rejected=[Rejected(error, DeadLetterStage.INBOX_COMMAND)])
    user_id = command.user_id
    index = Index.load(read(user_id))
    gone = index.expire(_ms(now) - policy.retention_ms)
    if command.action is InboxAction.EXPIRE:
        # Nothing is pushed: a client learns of it when it lists. An index left empty goes too.
        if not gone:
            return Effects()
        value = index.dump() if index.lines else None
        return Effects(writes=[TableWrite("inbox", user_id, value), *_dropped(user_id, gone)])
    if command.action is InboxAction.MARK_ALL_READ:
        changed = index.mark_all_read()
    else:
        flag, on = FLAGS[command.action]
        changed = index.set_flag(command.ids, flag, on)
    effects = Effects(writes=_dropped(user_id, gone))
    if changed:
        index.advance(_ms(now))
    if changed or gone:
        effects.writes.insert(0, TableWrite("inbox", user_id, index.dump()))
    kind = FeedKind.UPDATE if changed else FeedKind.ANSWER
    frame = update_frame([line.item() for line in changed], unread=index.unread())
    effects.records.append(_feed(policy, user_id, index.seq, kind, frame, command.command_id))
    if command.action in (InboxAction.MARK_READ, InboxAction.MARK_ALL_READ):
        effects.statuses.extend(_read_statuses(read, user_id, changed, command, now))
    return effects


def _read_statuses(
    read: Reader, user_id: str, changed: list[Line], command: InboxCommand, now: datetime
) -> list[DeliveryStatus]:
    statuses = []
    at = datetime.fromtimestamp(command.at / 1000, tz=now.tzinfo) if command.at else now
    for line in changed:
        stored = read(entry_key(user_id, line.notification_id))
        if stored is None:
            continue
        event_id = orjson.loads(stored).get("event_id", "")
        statuses.append(
            DeliveryStatus(
                notification_id=line.notification_id,
                event_id=event_id,
                recipient=user_id,
                channel=Channel.INAPP,
                provider=PROVIDER,
                outcome=Outcome.READ,
                attempt=1,
                at=at,
            )
        )
    return statuses


def items(read: Reader, user_id: str, lines: list[Line]) -> list[Item]:
    """The lines with their notifications (a line whose notification is missing is left out)."""
    found = []
    for line in lines:
        stored = read(entry_key(user_id, line.notification_id))
        if stored is not None:
            found.append(line.item(stored.encode()))
    return found
