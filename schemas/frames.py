"""The inbox's server frames (`notification`, `inbox_update`, the `inbox` body), built where the inbox is: the
worker writes them onto the feed and into its replies, and the gateway forwards them as they are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from schemas.websocket import VERSION


@dataclass(frozen=True, slots=True)
class Item:
    """One inbox entry as a client sees it: the notification exactly as it was on the in-app topic."""

    notification_id: str
    raw: bytes
    read: bool
    archived: bool


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    # The cursor for the next (older) page, or None when this page reaches the oldest entry.
    next_before: str | None


def frame(kind: str, request_id: str | None = None, **fields: Any) -> bytes:
    body: dict[str, Any] = {"type": kind, "v": VERSION}
    if request_id is not None:
        body["id"] = request_id
    body.update(fields)
    return orjson.dumps(body)


def notification_frame(raw: bytes, *, unread: int, read: bool = False) -> bytes:
    # Spliced, not re-serialised: the notification goes out exactly as it was on the topic.
    return b'{"type":"notification","v":%d,"unread":%d,"read":%s,"notification":%b}' % (
        VERSION,
        unread,
        b"true" if read else b"false",
        raw,
    )


def item_json(item: Item) -> dict[str, Any]:
    return {"notification": orjson.Fragment(item.raw), "read": item.read, "archived": item.archived}


# What one item of an `inbox` reply adds to its notification: its other fields (at most when both are false)
# and the comma after it.
INBOX_ITEM_BYTES: Final = len(orjson.dumps(item_json(Item("", b"0", False, False)))) - len(b"0") + len(b",")


def fit(page: Page, room: int) -> Page:
    """The newest items of `page` whose items take at most `room` bytes of an `inbox` reply (frame or HTTP
    body), with the cursor on the last one kept, so the next page starts after it. The first item is kept
    whatever its size, so paging always moves on; HERALD_INAPP_MAX_BYTES caps a notification's size
    upstream."""
    used = 0
    for kept, item in enumerate(page.items):
        used += len(item.raw) + INBOX_ITEM_BYTES
        if kept and used > room:
            return Page(page.items[:kept], page.items[kept - 1].notification_id)
    return page


def inbox_body(page: Page, *, unread: int) -> dict[str, Any]:
    return {"items": [item_json(i) for i in page.items], "unread": unread, "next_before": page.next_before}


def state_item(item: Item) -> dict[str, Any]:
    return {"notification_id": item.notification_id, "read": item.read, "archived": item.archived}


def update_frame(items: Sequence[Item], *, unread: int) -> bytes:
    return frame("inbox_update", items=[state_item(i) for i in items], unread=unread)
