"""The gateway's WebSocket protocol, version 1: the frames each way, error codes, close codes and reasons, and
why a token is refused. docs/WEBSOCKET.md describes it; a test keeps its tables equal to these."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import open_ended
from schemas.events import Identifier, UserId
from schemas.notifications import InAppNotification
from schemas.preference_center import PreferenceChanges, PreferencesView

VERSION: Final = 1


class AuthReason(StrEnum):
    """Why a connection or a token refresh was refused: the `reason` label of the auth-failure metric."""

    MISSING_TOKEN = "missing_token"  # noqa: S105 - a reason, not a credential
    MALFORMED_TOKEN = "malformed_token"  # noqa: S105 - not three base64url parts of JSON
    BAD_SIGNATURE = "bad_signature"  # signed with another key
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"  # `alg: none`, or not the configured algorithm
    UNKNOWN_KEY = "unknown_key"  # no key in the JWKS for the token's `kid`
    EXPIRED_TOKEN = "expired_token"  # noqa: S105
    INVALID_CLAIMS = "invalid_claims"  # `sub`/`exp` missing or malformed, wrong `aud`/`iss`, `nbf` ahead
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"  # a browser page from an origin not on the allow-list


class CloseReason(StrEnum):
    """The reason of a close frame the gateway sends (a short machine-readable word); `code` is its code.
    Refusals are sent after accepting the socket, because a refused handshake reaches a browser as a bare
    "connection failed" with no reason."""

    MISSING_TOKEN = "missing_token"  # noqa: S105 - a reason, not a credential
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - every other token fault; the metric has the finer reason
    EXPIRED_TOKEN = "expired_token"  # noqa: S105 - at connect, or the connection outlived its token
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    IDLE_TIMEOUT = "idle_timeout"
    SLOW_CLIENT = "slow_client"  # the outbound queue filled up; reconnect after a back-off
    NOT_READY = "not_ready"  # the instance is still reading its topics
    GOING_AWAY = "going_away"  # shutting down: reconnect, to another instance
    DRAINING = "draining"  # shutting down, so a new connection is refused

    @property
    def code(self) -> int:
        return CLOSE_CODES[self]


# RFC 6455 codes where one fits (1001 going away, 1013 try again later), else the 4000 range for refusals.
CLOSE_CODES: Final[dict[CloseReason, int]] = {
    CloseReason.MISSING_TOKEN: 4001,
    CloseReason.INVALID_TOKEN: 4002,
    CloseReason.EXPIRED_TOKEN: 4003,
    CloseReason.ORIGIN_NOT_ALLOWED: 4004,
    CloseReason.TOO_MANY_CONNECTIONS: 4005,
    CloseReason.IDLE_TIMEOUT: 4006,
    CloseReason.SLOW_CLIENT: 1013,
    CloseReason.NOT_READY: 1013,
    CloseReason.GOING_AWAY: 1001,
    CloseReason.DRAINING: 1001,
}
# Sent by the server (uvicorn) without a reason when a client frame exceeds the configured maximum size.
CLOSE_MESSAGE_TOO_BIG: Final = 1009


class ErrorCode(StrEnum):
    """The `code` of an error frame; the connection stays open after each of these."""

    MALFORMED_FRAME = "malformed_frame"  # not a JSON object, or a binary frame
    UNSUPPORTED_VERSION = "unsupported_version"  # `v` missing or not VERSION
    UNKNOWN_TYPE = "unknown_type"  # `type` missing or not one the server understands
    INVALID_FRAME = "invalid_frame"  # a known type with missing, extra or wrong fields
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - a refresh token that failed verification
    UNAVAILABLE = "unavailable"  # the inbox or the preferences could not be read or changed now; retry later
    LOCKED = "locked"  # a preference change for a critical category's channel, which is always sent
    NOT_OFFERED = "not_offered"  # a preference change for a category or channel the rules do not define


class RecoveryOutcome(StrEnum):
    """What came of a reconnection's `?since=`: the `outcome` label of the recovery metric."""

    RECOVERED = "recovered"
    FAILED = "failed"  # that point is no longer kept (or unknown): the welcome says `recovered: false`


# --- client -> server -------------------------------------------------------------------------------------
RequestId = Annotated[str, Field(min_length=1, max_length=100)]
Ids = Annotated[list[Identifier], Field(min_length=1, max_length=100)]


class _Frame(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    v: Literal[1]


class _Command(_Frame):
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


class GetPreferences(_Command):
    type: Literal["get_preferences"]


class SetPreferences(_Command):
    type: Literal["set_preferences"]
    changes: PreferenceChanges


COMMANDS: Final = (Ping, Refresh, ListInbox, Mark, MarkAllRead, GetPreferences, SetPreferences)
Command = Ping | Refresh | ListInbox | Mark | MarkAllRead | GetPreferences | SetPreferences
ClientFrame = Annotated[Command, Field(discriminator="type")]


# --- server -> client -------------------------------------------------------------------------------------
# What the gateway sends, described for clients (and checked against what it writes); the gateway builds the
# bytes itself, splicing each notification in exactly as it was on the topic.
class _Reply(_Frame):
    id: RequestId | None = None  # the `id` of the client frame answered, when it had one


class Welcome(_Frame):
    type: Literal["welcome"]
    user_id: UserId
    unread: Annotated[int, Field(ge=0)]
    expires_at: int  # the token's expiry, seconds since the epoch
    recovered: bool | None = None  # only with `?since=`
    missed: Annotated[int, Field(ge=0)] | None = None  # with `recovered: true`: how many frames follow


class NotificationFrame(_Frame):
    type: Literal["notification"]
    unread: Annotated[int, Field(ge=0)]
    read: bool
    notification: InAppNotification


class InboxItem(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    notification: InAppNotification
    read: bool
    archived: bool


class InboxFrame(_Reply):
    type: Literal["inbox"]
    items: list[InboxItem]
    unread: Annotated[int, Field(ge=0)]
    # The cursor for the next page, null on the page that reaches the oldest entry. A page bounded in bytes
    # may hold fewer than `limit` items with older ones left: page on this, never on the number of items.
    next_before: Identifier | None


class ItemState(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    notification_id: Identifier
    read: bool
    archived: bool


class InboxUpdate(_Frame):
    type: Literal["inbox_update"]
    items: list[ItemState]
    unread: Annotated[int, Field(ge=0)]


class Ack(_Reply):
    type: Literal["ack"]
    unread: Annotated[int, Field(ge=0)]


class Refreshed(_Reply):
    type: Literal["refreshed"]
    expires_at: int


class Pong(_Reply):
    type: Literal["pong"]


class PreferencesFrame(_Reply):
    """The answer to `get_preferences`, and to `set_preferences` with the change applied."""

    type: Literal["preferences"]
    preferences: PreferencesView


class ErrorFrame(_Reply):
    type: Literal["error"]
    code: Annotated[ErrorCode, Field(json_schema_extra=open_ended)]
    message: str


ServerFrame = Annotated[
    Welcome
    | NotificationFrame
    | InboxFrame
    | InboxUpdate
    | Ack
    | Refreshed
    | Pong
    | PreferencesFrame
    | ErrorFrame,
    Field(discriminator="type"),
]
