"""What the in-app measurements write: in-app notifications (for the worker's inbox agent) and records of the
inbox feed as the worker writes them (the `notification` frame, keyed by user id, with its headers), so the
gateway's fan-out can be driven without the worker in the path."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.frames import notification_frame
from schemas.inbox import FeedHeader, FeedKind
from schemas.notifications import InAppNotification

Headers = list[tuple[str, bytes]]
NOTIFICATION_KIND = FeedKind.NOTIFICATION.value.encode()


def notification_template() -> dict[str, Any]:
    """An in-app notification as the in-app topic holds it; `data.sent_at` is the send stamp clients read."""
    now = datetime.now(UTC)
    template: dict[str, Any] = orjson.loads(
        InAppNotification(
            notification_id="ntf_x",
            event_id="evt_x",
            event_type="bench.fanout",
            recipient="u0",
            occurred_at=now,
            created_at=now,
            title="Hello",
            body="bench",
        ).to_json()
    )
    return template


def notification(template: dict[str, Any], seq: int, user: str, sent_at: float, run: str = "0") -> bytes:
    """The raw notification: ids differ per run (the inbox keeps duplicates by id once)."""
    template.update(
        notification_id=f"ntf_{run}_{seq}",
        event_id=f"evt_{run}_{seq}",
        recipient=user,
        data={"sent_at": sent_at},
    )
    return orjson.dumps(template)


def feed_headers(seq: int) -> Headers:
    return [(FeedHeader.SEQ, str(seq).encode()), (FeedHeader.KIND, NOTIFICATION_KIND)]


def feed_value(raw: bytes, unread: int) -> bytes:
    return notification_frame(raw, unread=unread)


def retained_inapp(topic: str, count: int, users: int) -> Iterator[tuple[str, int | None, bytes, bytes]]:
    """`count` in-app notifications over `users` users, as `workload.produce_all` takes them."""
    template = notification_template()
    now = time.time()
    for seq in range(count):
        user = f"r{seq % users}"
        yield topic, None, user.encode(), notification(template, seq, user, now, run="retained")


def retained_feed(
    topic: str, count: int, users: int
) -> Iterator[tuple[str, int | None, bytes, bytes, Headers]]:
    """`count` feed records over `users` users, each user's sequence growing from 1."""
    template = notification_template()
    now = time.time()
    for seq in range(count):
        user = f"r{seq % users}"
        user_seq = seq // users + 1
        raw = notification(template, seq, user, now, run="retained")
        yield topic, None, user.encode(), feed_value(raw, user_seq), feed_headers(user_seq)
