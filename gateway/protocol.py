"""Reading client frames and writing server frames of the WebSocket protocol (`schemas.websocket` defines
it): JSON frames with `type` and `v`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson
from pydantic import TypeAdapter, ValidationError

from gateway.inbox import Entry, Page
from kernel.settings import GATEWAY_FRAME_OVERHEAD_BYTES
from schemas.websocket import COMMANDS, VERSION, AuthReason, CloseReason, Command, ErrorCode

_AUTH_CLOSES: Final = {
    AuthReason.MISSING_TOKEN: CloseReason.MISSING_TOKEN,
    AuthReason.EXPIRED_TOKEN: CloseReason.EXPIRED_TOKEN,
    AuthReason.ORIGIN_NOT_ALLOWED: CloseReason.ORIGIN_NOT_ALLOWED,
}


def close_for(reason: AuthReason) -> CloseReason:
    """The close reason (and so code) for an auth failure. Token faults share one reason so a client learns
    only that the token is bad, not which check an attacker should work on next."""
    return _AUTH_CLOSES.get(reason, CloseReason.INVALID_TOKEN)


class ProtocolError(Exception):
    """A client frame the server could not act on; answered with an error frame."""

    def __init__(self, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


_COMMANDS: Final[dict[str, TypeAdapter[Any]]] = {
    name: TypeAdapter(model)
    for model in COMMANDS
    for name in model.model_fields["type"].annotation.__args__  # type: ignore[union-attr]
}


def parse(text: str | None) -> Command:
    """A client frame as a command; ProtocolError says what is wrong with it."""
    if text is None:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "frames must be JSON text frames, not binary")
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "frame must be a JSON object")
    request_id = frame.get("id") if isinstance(frame.get("id"), str) else None
    # `True == 1` in Python, so the type is checked too: `"v": true` is not version 1.
    version = frame.get("v")
    if type(version) is not int or version != VERSION:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"'v' must be {VERSION}", request_id)
    kind = frame.get("type")
    adapter = _COMMANDS.get(kind) if isinstance(kind, str) else None
    if adapter is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, "'type' must be one of: " + ", ".join(sorted(_COMMANDS)), request_id
        )
    try:
        command: Command = adapter.validate_python(frame)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "(frame)" for e in exc.errors()})
        raise ProtocolError(
            ErrorCode.INVALID_FRAME, "invalid fields: " + ", ".join(fields), request_id
        ) from None
    return command


# --- server -> client -------------------------------------------------------------------------------------
def _frame(kind: str, request_id: str | None = None, **fields: Any) -> bytes:
    body: dict[str, Any] = {"type": kind, "v": VERSION}
    if request_id is not None:
        body["id"] = request_id
    body.update(fields)
    return orjson.dumps(body)


def welcome_frame(
    user_id: str, *, unread: int, expires_at: float, recovered: bool | None = None, missed: int = 0
) -> bytes:
    fields: dict[str, Any] = {"user_id": user_id, "unread": unread, "expires_at": int(expires_at)}
    if recovered is not None:
        fields["recovered"] = recovered
    if recovered:
        fields["missed"] = missed
    return _frame("welcome", **fields)


def notification_frame(entry: Entry, *, unread: int) -> bytes:
    # Spliced, not re-serialised: the notification goes out exactly as it was on the topic.
    return b'{"type":"notification","v":%d,"unread":%d,"read":%s,"notification":%b}' % (
        VERSION,
        unread,
        b"true" if entry.read.value else b"false",
        entry.raw,
    )


def item_json(entry: Entry) -> dict[str, Any]:
    return {
        "notification": orjson.Fragment(entry.raw),
        "read": entry.read.value,
        "archived": entry.archived.value,
    }


# What one item of an `inbox` reply adds to its notification: its other fields (at most when both are false)
# and the comma after it.
INBOX_ITEM_BYTES: Final = len(orjson.dumps(item_json(Entry("", b"0")))) - len(b"0") + len(b",")


def fit(page: Page, max_bytes: int) -> Page:
    """The newest entries of `page` whose `inbox` reply (frame or HTTP body) takes at most `max_bytes`, with
    the cursor on the last one kept, so the next page starts after it. The first entry is kept whatever its
    size, so paging always moves on; HERALD_MAX_RECORD_BYTES caps a notification's size upstream."""
    room = max_bytes - GATEWAY_FRAME_OVERHEAD_BYTES
    used = 0
    for kept, entry in enumerate(page.entries):
        used += len(entry.raw) + INBOX_ITEM_BYTES
        if kept and used > room:
            return Page(page.entries[:kept], page.entries[kept - 1].notification_id)
    return page


def inbox_body(page: Page, *, unread: int) -> dict[str, Any]:
    return {"items": [item_json(e) for e in page.entries], "unread": unread, "next_before": page.next_before}


def inbox_frame(page: Page, *, unread: int, request_id: str | None) -> bytes:
    return _frame("inbox", request_id, **inbox_body(page, unread=unread))


def state_item(entry: Entry) -> dict[str, Any]:
    return {
        "notification_id": entry.notification_id,
        "read": entry.read.value,
        "archived": entry.archived.value,
    }


def update_frame(entries: Sequence[Entry], *, unread: int) -> bytes:
    return _frame("inbox_update", items=[state_item(e) for e in entries], unread=unread)


def ack_frame(*, unread: int, request_id: str | None) -> bytes:
    return _frame("ack", request_id, unread=unread)


def refreshed_frame(*, expires_at: float, request_id: str | None) -> bytes:
    return _frame("refreshed", request_id, expires_at=int(expires_at))


def error_frame(error: ProtocolError) -> bytes:
    return _frame("error", error.request_id, code=error.code.value, message=error.message)


def pong_frame(request_id: str | None = None) -> bytes:
    return _frame("pong", request_id)
