"""The inbox feed as the gateway sees it: one record per frame the owner published for a user, and the
interfaces between its source (Kafka, or a test's fake) and what the gateway does with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kernel.readiness import Readiness
from schemas.inbox import FeedHeader, FeedKind


@dataclass(frozen=True, slots=True)
class FeedRecord:
    user_id: str
    # The user's inbox sequence after this record: a socket takes only records above what it has seen.
    seq: int
    kind: FeedKind
    # A complete server frame, forwarded to sockets as it is.
    frame: bytes
    # The command this record answers, if any.
    command_id: str | None = None

    @property
    def pushed(self) -> bool:
        """Whether sockets receive it; an answer only answers its command."""
        return self.kind is not FeedKind.ANSWER


class InvalidFeedRecord(ValueError):
    """A record without a user id key, a frame, or the headers every feed record carries."""


def decode(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> FeedRecord:
    """A feed record from its Kafka parts; InvalidFeedRecord names what is missing (never a value)."""
    if not key:
        raise InvalidFeedRecord("no key")
    if not value:
        raise InvalidFeedRecord("no value")
    named = {name: raw for name, raw in headers}
    try:
        user_id = key.decode()
        seq = int(named[FeedHeader.SEQ].decode("ascii"))
        kind = FeedKind(named[FeedHeader.KIND].decode("ascii"))
        command = named.get(FeedHeader.COMMAND)
        command_id = command.decode("ascii") if command is not None else None
    except KeyError as exc:
        raise InvalidFeedRecord(f"no {exc.args[0]} header") from None
    except (UnicodeDecodeError, ValueError):
        raise InvalidFeedRecord("a key or header that does not decode") from None
    return FeedRecord(user_id, seq, kind, value, command_id)


class FeedSink(Protocol):
    """What the feed hands its records to (the inbox service)."""

    def positioned(self) -> None:
        """The feed is at the end of every partition: every record from now on will be handed over."""

    def feed(self, records: Sequence[FeedRecord]) -> None:
        """Records in the order of their partition (so in order for each user)."""

    def lost(self) -> None:
        """The feed stopped reading: records may be missed until it is positioned again."""


class FeedSource(Protocol):
    """The gateway's source of feed records; tests pass a fake."""

    @property
    def readiness(self) -> Readiness: ...

    async def run(self, sink: FeedSink) -> None:
        """Hand records to `sink` until cancelled."""
