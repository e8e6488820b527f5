"""The gateway's WebSocket protocol: JSON frames in both directions, and the close codes it uses."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

import orjson
from starlette import status

from schemas.notifications import InAppNotification

VERSION: Final = 1

# --- close codes ------------------------------------------------------------------------------------------
# Auth failures are sent after accepting the socket, because a refused handshake reaches a browser as a bare
# "connection failed" with no reason; the close reason is the AuthReason value.
CLOSE_UNAUTHORIZED: Final = 4001
# The client stopped reading and its outbound queue filled up; it may reconnect after a back-off.
CLOSE_SLOW_CLIENT: Final = status.WS_1013_TRY_AGAIN_LATER
SLOW_CLIENT_REASON: Final = "slow_client"
# Sent by uvicorn itself to every open socket when the gateway shuts down; reconnect to another instance.
CLOSE_SERVICE_RESTART: Final = status.WS_1012_SERVICE_RESTART
# Sent by uvicorn when a client frame exceeds the configured maximum size.
CLOSE_MESSAGE_TOO_BIG: Final = status.WS_1009_MESSAGE_TOO_BIG


class ErrorCode(StrEnum):
    """The `code` of an error frame; the connection stays open after each of these."""

    MALFORMED_FRAME = "malformed_frame"  # not a JSON object, or a binary frame
    UNSUPPORTED_VERSION = "unsupported_version"  # `v` missing or not VERSION
    UNKNOWN_TYPE = "unknown_type"  # `type` missing or not one the server understands


class ProtocolError(Exception):
    """A client frame the server could not act on; answered with an error frame."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- server -> client -------------------------------------------------------------------------------------
def welcome_frame(user_id: str) -> bytes:
    return orjson.dumps({"type": "welcome", "v": VERSION, "user_id": user_id})


def notification_frame(notification: InAppNotification) -> bytes:
    # Spliced, not re-serialised: the notification is encoded once per record, exactly as on the wire.
    return b'{"type":"notification","v":%d,"notification":%b}' % (VERSION, notification.to_json())


def error_frame(error: ProtocolError) -> bytes:
    return orjson.dumps({"type": "error", "v": VERSION, "code": error.code.value, "message": error.message})


def pong_frame() -> bytes:
    return orjson.dumps({"type": "pong", "v": VERSION})


# --- client -> server -------------------------------------------------------------------------------------
def reply_to(text: str | None) -> bytes:
    """The frame answering one client message (None for a binary frame): a pong, or an error frame."""
    try:
        return _answer(_parse(text))
    except ProtocolError as error:
        return error_frame(error)


def _parse(text: str | None) -> dict[str, object]:
    if text is None:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "frames must be JSON text frames, not binary")
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "frame must be a JSON object")
    # `True == 1` in Python, so the type is checked too: `"v": true` is not version 1.
    version = frame.get("v")
    if type(version) is not int or version != VERSION:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"'v' must be {VERSION}")
    return frame


def _answer(frame: dict[str, object]) -> bytes:
    kind = frame.get("type")
    if kind == "ping":
        return pong_frame()
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "'type' must be one of: ping")
