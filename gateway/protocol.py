"""The gateway's wire protocol, version 1: JSON frames with `type` and `v`, and the close codes it uses."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette import status

from gateway.auth import AuthReason
from gateway.inbox import Entry, Page
from schemas.events import Identifier

VERSION: Final = 1

# --- close codes ------------------------------------------------------------------------------------------
# Refusals are sent after accepting the socket, because a refused handshake reaches a browser as a bare
# "connection failed" with no reason. The close reason is a short machine-readable word.
CLOSE_MISSING_TOKEN: Final = 4001
CLOSE_INVALID_TOKEN: Final = 4002  # reason "invalid_token"; the metric has the finer reason
CLOSE_TOKEN_EXPIRED: Final = 4003  # at connect, or when a connection outlives its token; refresh in time
CLOSE_ORIGIN_NOT_ALLOWED: Final = 4004
CLOSE_TOO_MANY_CONNECTIONS: Final = 4005
CLOSE_IDLE_TIMEOUT: Final = 4006
# The client stopped reading and its outbound queue filled up; it may reconnect after a back-off.
CLOSE_SLOW_CLIENT: Final = status.WS_1013_TRY_AGAIN_LATER
SLOW_CLIENT_REASON: Final = "slow_client"
NOT_READY_REASON: Final = "not_ready"  # 1013 too: the instance is still reading its topics
# Graceful shutdown: reconnect, to another instance.
CLOSE_GOING_AWAY: Final = status.WS_1001_GOING_AWAY
# Sent by uvicorn when a client frame exceeds the configured maximum size.
CLOSE_MESSAGE_TOO_BIG: Final = status.WS_1009_MESSAGE_TOO_BIG


def close_for(reason: AuthReason) -> tuple[int, str]:
    """The close code and reason for an auth failure. Token faults share one reason so a client learns
    only that the token is bad, not which check an attacker should work on next."""
    if reason is AuthReason.MISSING_TOKEN:
        return CLOSE_MISSING_TOKEN, reason.value
    if reason is AuthReason.EXPIRED_TOKEN:
        return CLOSE_TOKEN_EXPIRED, reason.value
    if reason is AuthReason.ORIGIN_NOT_ALLOWED:
        return CLOSE_ORIGIN_NOT_ALLOWED, reason.value
    return CLOSE_INVALID_TOKEN, "invalid_token"


class ErrorCode(StrEnum):
    """The `code` of an error frame; the connection stays open after each of these."""

    MALFORMED_FRAME = "malformed_frame"  # not a JSON object, or a binary frame
    UNSUPPORTED_VERSION = "unsupported_version"  # `v` missing or not VERSION
    UNKNOWN_TYPE = "unknown_type"  # `type` missing or not one the server understands
    INVALID_FRAME = "invalid_frame"  # a known type with missing, extra or wrong fields
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - a refresh token that failed verification
    UNAVAILABLE = "unavailable"  # the inbox could not be updated (broker down); retry later


class ProtocolError(Exception):
    """A client frame the server could not act on; answered with an error frame."""

    def __init__(self, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


# --- client -> server -------------------------------------------------------------------------------------
RequestId = Annotated[str, Field(min_length=1, max_length=100)]
Ids = Annotated[list[Identifier], Field(min_length=1, max_length=100)]


class _Command(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    v: Literal[1]
    id: RequestId | None = None  # echoed in the reply, so a client can match replies to requests


class Ping(_Command):
    type: Literal["ping"]


class Refresh(_Command):
    type: Literal["refresh"]
    token: Annotated[str, Field(min_length=1, max_length=8192)]


class ListInbox(_Command):
    type: Literal["list"]
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    before: Identifier | None = None
    archived: bool = False


class Mark(_Command):
    type: Literal["mark_read", "mark_unread", "archive", "unarchive"]
    ids: Ids


class MarkAllRead(_Command):
    type: Literal["mark_all_read"]


Command = Ping | Refresh | ListInbox | Mark | MarkAllRead
_COMMANDS: Final[dict[str, TypeAdapter[Any]]] = {
    name: TypeAdapter(model)
    for model in (Ping, Refresh, ListInbox, Mark, MarkAllRead)
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
