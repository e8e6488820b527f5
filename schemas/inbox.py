"""The in-app inbox between gateways and workers.

The worker that owns a user's partition keeps the user's inbox in its `inbox` table. Gateways keep nothing:
- a client's read/archive change goes to the owner as an `InboxCommand` on `herald.inbox.commands` (keyed
  by user id, so it meets the user's notifications on the same worker, in order);
- the owner publishes what changed on `herald.inbox.feed` (keyed by user id): each record's value is the
  server frame exactly as a socket receives it, and its headers (`FeedHeader`) say what it is, so a gateway
  forwards it without parsing it;
- a gateway reads a user's inbox (`list`, the unread count and `?since=` recovery on connect) from the owner
  over the worker's internal endpoint (`SessionRequest`, `PageRequest`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import Field

from schemas.base import WireModel
from schemas.events import Identifier, UserId


class InboxAction(StrEnum):
    MARK_READ = "mark_read"
    MARK_UNREAD = "mark_unread"
    ARCHIVE = "archive"
    UNARCHIVE = "unarchive"
    MARK_ALL_READ = "mark_all_read"
    # The worker's own sweep: drop what is past HERALD_INBOX_RETENTION_DAYS (gateways never send it).
    EXPIRE = "expire"


class InboxCommand(WireModel):
    """A client's change to its inbox, applied by the owner in order with the user's notifications. Ids not
    in the user's inbox are ignored. The owner answers every command on the feed (`FeedHeader.COMMAND`)."""

    schema_version: Literal[1] = 1
    command_id: Identifier  # chosen by the gateway; the feed record that answers it carries it
    user_id: UserId
    action: InboxAction
    ids: Annotated[list[Identifier], Field(max_length=100)] = Field(default_factory=list)
    # Milliseconds since the epoch on the gateway's clock: when the client asked (a `read` status's time).
    at: Annotated[int, Field(ge=0)]


class FeedKind(StrEnum):
    """What a feed record is (header `herald-kind`)."""

    NOTIFICATION = "notification"  # a new notification frame: pushed to the user's sockets
    UPDATE = "update"  # an `inbox_update` frame (read/archived changed): pushed to the user's sockets
    ANSWER = "answer"  # a command that changed nothing: not pushed; its frame carries the unread count


class FeedHeader:
    """The feed records' header names (values are ASCII)."""

    # The user's inbox sequence after this record: +1 per pushed record (notification or update); an answer
    # carries the current one. A gateway pushes to a socket only records above what the socket has seen.
    SEQ: Final = "herald-seq"
    KIND: Final = "herald-kind"
    COMMAND: Final = "herald-command"  # on the update or answer that answers a command: its command_id


class SessionRequest(WireModel):
    """`POST /internal/inbox/session`: what a new socket starts with."""

    user_id: UserId
    since: Identifier | None = None  # the last notification the client saw, when reconnecting
    max_frames: Annotated[int, Field(ge=1, le=100_000)] = 255  # more missed than this: recovered false


class SessionReply(WireModel):
    """The user's inbox sequence (the socket then takes feed records above it), the unread count and, with
    `since`, whether what was missed is recovered and the missed notification frames, oldest first."""

    seq: int
    unread: int
    recovered: bool | None = None
    missed: list[dict[str, Any]] = Field(default_factory=list)


class PageRequest(WireModel):
    """`POST /internal/inbox/page`: one page of `list`, newest first."""

    user_id: UserId
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    before: Identifier | None = None
    archived: bool = False
