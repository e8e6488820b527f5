"""A user's inbox as the worker keeps it, as plain data: an index record per user and one record per kept
notification, both in the `inbox` table.

The index (key: the user id) holds the user's feed sequence and, oldest first, one line per kept
notification: `[notification id, created (epoch ms), flags]`. It is rewritten on every change, so it holds no
notification content: at HERALD_INBOX_SIZE 100 it is about 5 KB. Each notification is kept once, unchanged,
under `entry_key(user, notification id)`, as the JSON text it had on the in-app topic."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from schemas.frames import Item

READ = 1
ARCHIVED = 2


def entry_key(user_id: str, notification_id: str) -> str:
    # \x1f cannot occur in a user id, so one user's keys never collide with another's, nor with an index.
    return f"{user_id}\x1f{notification_id}"


def is_index_key(key: str) -> bool:
    return "\x1f" not in key


@dataclass(slots=True)
class Line:
    notification_id: str
    created_ms: int
    flags: int = 0

    @property
    def read(self) -> bool:
        return bool(self.flags & READ)

    @property
    def archived(self) -> bool:
        return bool(self.flags & ARCHIVED)

    @property
    def unread(self) -> bool:
        return not self.flags

    def item(self, raw: bytes = b"") -> Item:
        return Item(self.notification_id, raw, self.read, self.archived)


@dataclass(slots=True)
class Index:
    seq: int = 0
    lines: list[Line] = field(default_factory=list)  # oldest first

    @classmethod
    def load(cls, stored: Any) -> Index:
        if not stored:
            return cls()
        return cls(int(stored["seq"]), [Line(str(n), int(c), int(f)) for n, c, f in stored["lines"]])

    def dump(self) -> dict[str, Any]:
        return {"seq": self.seq, "lines": [[x.notification_id, x.created_ms, x.flags] for x in self.lines]}

    def advance(self, now_ms: int) -> None:
        """Move the sequence on for a pushed record. Never below the clock: an index the sweep deleted
        starts again above every sequence a socket may have seen of the old one."""
        self.seq = max(self.seq + 1, now_ms)

    def find(self, notification_id: str) -> int | None:
        # Newest first: a replay or a mark is almost always about a recent notification.
        for position in range(len(self.lines) - 1, -1, -1):
            if self.lines[position].notification_id == notification_id:
                return position
        return None

    def unread(self) -> int:
        return sum(1 for line in self.lines if line.unread)

    def add(self, notification_id: str, created_ms: int, capacity: int) -> list[Line]:
        """Append a notification; returns the lines that fell out (the oldest, past `capacity`)."""
        self.lines.append(Line(notification_id, created_ms))
        if len(self.lines) <= capacity:
            return []
        dropped = self.lines[: len(self.lines) - capacity]
        del self.lines[: len(dropped)]
        return dropped

    def expire(self, oldest_ms: int) -> list[Line]:
        """Drop the lines created before `oldest_ms`; returns them."""
        kept = [line for line in self.lines if line.created_ms >= oldest_ms]
        if len(kept) == len(self.lines):
            return []
        gone = [line for line in self.lines if line.created_ms < oldest_ms]
        self.lines = kept
        return gone

    def set_flag(self, ids: list[str], flag: int, on: bool) -> list[Line]:
        """Set or clear `flag` on the lines of `ids` this inbox holds; returns those that changed."""
        wanted = set(ids)
        changed = []
        for line in self.lines:
            if line.notification_id in wanted:
                flags = line.flags | flag if on else line.flags & ~flag
                if flags != line.flags:
                    line.flags = flags
                    changed.append(line)
        return changed

    def mark_all_read(self) -> list[Line]:
        changed = []
        for line in self.lines:
            if not line.read:
                line.flags |= READ
                changed.append(line)
        return changed

    def newest_first(self, *, before: str | None, archived: bool) -> Iterator[Line]:
        """Lines newest first, after the cursor `before` (exclusive), from the archive or not."""
        started = before is None
        for line in reversed(self.lines):
            if not started:
                started = line.notification_id == before
                continue
            if line.archived == archived:
                yield line

    def since(self, notification_id: str) -> list[Line] | None:
        """The lines newer than `notification_id`, oldest first; None if that one is no longer kept."""
        position = self.find(notification_id)
        return None if position is None else self.lines[position + 1 :]
