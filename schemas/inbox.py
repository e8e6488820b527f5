"""The inbox's state records on the compacted `herald.inbox` topic: one last-writer-wins register per key."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from schemas.base import WireModel
from schemas.events import Identifier, UserId


class InboxAttribute(StrEnum):
    """The part of an inbox entry a record sets."""

    READ = "read"
    ARCHIVED = "archived"


class InboxStateChange(WireModel):
    """Sets `attribute` of one notification (or, with `notification_id` unset, marks read every notification
    up to and including `up_to`). Keyed by `key()`, so compaction keeps the latest record per register;
    the record with the larger (`at`, `value`) wins, whatever order instances read them in."""

    schema_version: Literal[1] = 1
    user_id: UserId
    attribute: InboxAttribute
    value: bool
    notification_id: Identifier | None = None
    up_to: Identifier | None = None
    # Milliseconds since the epoch on the clock of the gateway that accepted the change.
    at: Annotated[int, Field(ge=0)]

    def key(self) -> bytes:
        # \x1f cannot occur in a user id, so keys of different users never collide.
        target = self.notification_id if self.notification_id is not None else "*"
        return f"{self.user_id}\x1f{self.attribute.value}\x1f{target}".encode()
