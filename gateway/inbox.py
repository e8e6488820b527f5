"""Each user's inbox: the last N in-app notifications with read and archived state, as plain data.

Every gateway instance builds the same inbox from the same two topics (the in-app topic and the compacted
`herald.inbox` state topic), so it is a pure function of what was consumed, in any order."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TypeVar

from schemas.inbox import InboxAttribute, InboxStateChange


@dataclass(frozen=True, slots=True, order=True)
class Register:
    """A last-writer-wins boolean: the larger (`at`, `value`) wins, so every instance picks the same one."""

    at: int
    value: bool


UNSET = Register(0, False)

K = TypeVar("K")


@dataclass(slots=True)
class Entry:
    notification_id: str
    # The notification exactly as on the in-app topic, spliced into frames without re-encoding.
    raw: bytes
    read: Register = UNSET
    archived: Register = UNSET

    def register(self, attribute: InboxAttribute) -> Register:
        return self.read if attribute is InboxAttribute.READ else self.archived

    def set(self, attribute: InboxAttribute, register: Register) -> bool:
        """Merge `register`; True if the entry's visible state changed."""
        current = self.register(attribute)
        if register <= current:
            return False
        if attribute is InboxAttribute.READ:
            self.read = register
        else:
            self.archived = register
        return register.value != current.value


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[Entry]
    # The cursor for the next (older) page, or None when this page reaches the oldest entry.
    next_before: str | None


@dataclass(slots=True)
class _UserInbox:
    entries: OrderedDict[str, Entry] = field(default_factory=OrderedDict)  # oldest first
    # Changes for notifications not consumed yet (another instance may be ahead of this one).
    pending: OrderedDict[tuple[str, InboxAttribute], Register] = field(default_factory=OrderedDict)
    pending_all_read: dict[str, Register] = field(default_factory=dict)


class Inbox:
    """The inboxes of every user this instance has seen, each holding at most `capacity` entries."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._users: dict[str, _UserInbox] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, user_id: str, notification_id: str, raw: bytes) -> Entry | None:
        """Append a notification; None if it is already kept (a replay): neither kept nor pushed twice."""
        user = self._users.setdefault(user_id, _UserInbox())
        if notification_id in user.entries:
            return None
        entry = Entry(notification_id, raw)
        user.entries[notification_id] = entry
        self._size += 1
        for attribute in InboxAttribute:
            register = user.pending.pop((notification_id, attribute), None)
            if register is not None:
                entry.set(attribute, register)
        all_read = user.pending_all_read.pop(notification_id, None)
        if all_read is not None:
            self._mark_all_read(user, notification_id, all_read)
        while len(user.entries) > self.capacity:
            user.entries.popitem(last=False)
            self._size -= 1
        return entry

    def apply(self, change: InboxStateChange) -> list[Entry]:
        """Merge a state change; returns the entries whose visible state it changed."""
        user = self._users.setdefault(change.user_id, _UserInbox())
        register = Register(change.at, change.value)
        if change.notification_id is None:
            if change.attribute is not InboxAttribute.READ or change.up_to is None:
                return []
            if change.up_to not in user.entries:
                _remember(user.pending_all_read, change.up_to, register, self.capacity)
                return []
            return self._mark_all_read(user, change.up_to, register)
        entry = user.entries.get(change.notification_id)
        if entry is None:
            pending_key = (change.notification_id, change.attribute)
            if register > user.pending.get(pending_key, UNSET):
                _remember(user.pending, pending_key, register, self.capacity)
            return []
        return [entry] if entry.set(change.attribute, register) else []

    @staticmethod
    def _mark_all_read(user: _UserInbox, up_to: str, register: Register) -> list[Entry]:
        changed = []
        for entry in user.entries.values():
            if entry.set(InboxAttribute.READ, register):
                changed.append(entry)
            if entry.notification_id == up_to:
                break
        return changed

    def forget_pending(self) -> None:
        """Drop changes for notifications never seen: once caught up, they were evicted or expired."""
        for user in self._users.values():
            user.pending.clear()
            user.pending_all_read.clear()

    def get(self, user_id: str, notification_id: str) -> Entry | None:
        user = self._users.get(user_id)
        return user.entries.get(notification_id) if user is not None else None

    def newest(self, user_id: str) -> Entry | None:
        user = self._users.get(user_id)
        if user is None or not user.entries:
            return None
        return next(reversed(user.entries.values()))

    def unread(self, user_id: str) -> int:
        user = self._users.get(user_id)
        if user is None:
            return 0
        return sum(1 for e in user.entries.values() if not e.read.value and not e.archived.value)

    def page(self, user_id: str, *, limit: int, before: str | None = None, archived: bool = False) -> Page:
        """Newest first; `before` is the previous page's cursor; `archived` lists the archive instead."""
        user = self._users.get(user_id)
        if user is None:
            return Page([], None)
        selected: list[Entry] = []
        started = before is None
        for entry in reversed(user.entries.values()):
            if not started:
                started = entry.notification_id == before
                continue
            if entry.archived.value != archived:
                continue
            if len(selected) == limit:
                return Page(selected, selected[-1].notification_id)
            selected.append(entry)
        return Page(selected, None)

    def since(self, user_id: str, notification_id: str) -> list[Entry] | None:
        """Every entry newer than `notification_id`, oldest first; None if that one is no longer kept."""
        user = self._users.get(user_id)
        if user is None or notification_id not in user.entries:
            return None
        newer: list[Entry] = []
        for entry in reversed(user.entries.values()):
            if entry.notification_id == notification_id:
                break
            newer.append(entry)
        newer.reverse()
        return newer


def _remember(pending: MutableMapping[K, Register], key: K, register: Register, bound: int) -> None:
    pending[key] = register
    while len(pending) > bound:
        pending.pop(next(iter(pending)))
