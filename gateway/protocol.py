"""Reading client frames and writing the gateway's own server frames of the WebSocket protocol
(`schemas.websocket` defines it): JSON frames with `type` and `v`. The inbox's frames are the owner's
(`schemas.frames`): the gateway forwards them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson
from pydantic import TypeAdapter, ValidationError

from schemas.frames import frame
from schemas.preference_center import PreferencesView
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
        # From the text, not the parsed dict: strict JSON validation takes enum values, times and dates as the
        # strings JSON has for them (a preference change's channels, days and quiet hours).
        command: Command = adapter.validate_json(text)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "(frame)" for e in exc.errors()})
        raise ProtocolError(
            ErrorCode.INVALID_FRAME, "invalid fields: " + ", ".join(fields), request_id
        ) from None
    return command


# --- server -> client -------------------------------------------------------------------------------------
def welcome_frame(
    user_id: str, *, unread: int, expires_at: float, recovered: bool | None = None, missed: int = 0
) -> bytes:
    fields: dict[str, Any] = {"user_id": user_id, "unread": unread, "expires_at": int(expires_at)}
    if recovered is not None:
        fields["recovered"] = recovered
    if recovered:
        fields["missed"] = missed
    return frame("welcome", **fields)


def inbox_frame(body: Mapping[str, Any], *, request_id: str | None) -> bytes:
    """A `list` reply: the owner's page body (`schemas.frames.inbox_body`) as a frame."""
    return frame("inbox", request_id, **body)


def ack_frame(*, unread: int, request_id: str | None) -> bytes:
    return frame("ack", request_id, unread=unread)


def refreshed_frame(*, expires_at: float, request_id: str | None) -> bytes:
    return frame("refreshed", request_id, expires_at=int(expires_at))


def preferences_frame(view: PreferencesView, *, request_id: str | None) -> bytes:
    return frame("preferences", request_id, preferences=view.model_dump(mode="json"))


def error_frame(error: ProtocolError) -> bytes:
    return frame("error", error.request_id, code=error.code.value, message=error.message)


def pong_frame(request_id: str | None = None) -> bytes:
    return frame("pong", request_id)
