"""Herald's Faust tables behind small typed wrappers: JSON values on compacted changelogs, partitioned like
the topics they serve (a str key survives the changelog round trip as str; raw would come back as bytes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import faust

from kernel.settings import Settings
from kernel.topics import changelog_topic_name
from schemas.preferences import Preferences
from schemas.users import STORED, UserProfile
from streams.effects import REVISION, TableName
from streams.runtime.stores import rocksdb_options

V = TypeVar("V")

# Parsed values kept per table; past this the cache starts again (it only saves re-parsing hot users).
_PARSED_CACHE_SIZE = 100_000


class StateTable(Generic[V]):
    """One Faust table read as typed values. Values are stored as JSON-able dicts (what the changelog holds);
    `get` parses each stored value once: a replaced value is a new object and is parsed afresh."""

    def __init__(self, table: Any, parse: Callable[[Any], V] | None = None) -> None:
        self.faust = table
        self._parse = parse
        self._parsed: dict[str, tuple[Any, V]] = {}

    def get(self, key: str) -> V | None:
        return self._value(key, self.faust.get(key))

    def revised(self, key: str) -> tuple[V | None, int | None]:
        """The value and its revision (`streams.effects.REVISION`; None if it has none), from one read."""
        stored = self.faust.get(key)
        revision = stored.get(REVISION) if isinstance(stored, Mapping) else None
        return self._value(key, stored), revision if isinstance(revision, int) else None

    def _value(self, key: str, stored: Any) -> V | None:
        if stored is None or self._parse is None:
            return stored  # type: ignore[no-any-return]  # stored as is: plain JSON values
        cached = self._parsed.get(key)
        if cached is not None and cached[0] is stored:
            return cached[1]
        value = self._parse(stored)
        if len(self._parsed) >= _PARSED_CACHE_SIZE:
            self._parsed.clear()
        self._parsed[key] = (stored, value)
        return value

    def __len__(self) -> int:
        return len(self.faust)

    def key_count(self) -> int:
        """The keys this worker holds, cheaply: `len` on Faust's RocksDB store reads every key, which a
        metrics scrape must not do at a million users, so there RocksDB's own estimate is summed instead."""
        store = self.faust.data
        databases = getattr(store, "_dbs_for_actives", None)
        if databases is None:
            return len(self.faust)
        return sum(int(db.property_int_value("rocksdb.estimate-num-keys") or 0) for db in databases())


def _unrevised(stored: Any) -> Any:
    if isinstance(stored, Mapping) and REVISION in stored:
        return {name: value for name, value in stored.items() if name != REVISION}
    return stored


def stored_profile(stored: Any) -> UserProfile:
    return UserProfile.model_validate(_unrevised(stored), strict=False, context=STORED)


def stored_preferences(stored: Any) -> Preferences:
    return Preferences.model_validate(_unrevised(stored), strict=False)


@dataclass(frozen=True)
class Tables:
    users: StateTable[UserProfile]  # user id → profile
    preferences: StateTable[Preferences]  # user id → preferences
    # Plain JSON values, read as they are stored; steps never mutate them, they return new ones.
    # recipient and notification id → when delivered (epoch s); see streams.delivery.dedup
    delivered: StateTable[Any]
    digests: StateTable[Mapping[str, Any]]  # recipient → {bucket: {rule, due, count, events}}
    throttles: StateTable[Mapping[str, list[float]]]  # recipient → {scope key: [send times (epoch s)]}
    # user id → the inbox's index; user id and notification id → the notification (streams.inbox.model)
    inbox: StateTable[Any]

    def by_name(self, name: TableName) -> StateTable[Any]:
        table: StateTable[Any] = getattr(self, name)
        return table


def declare_table(app: faust.App, settings: Settings, name: TableName) -> Any:
    changelog = app.topic(
        changelog_topic_name(settings.app_id, name),
        key_serializer="json",
        value_serializer="json",
        partitions=settings.partitions,
        replicas=settings.replication_factor,
        compacting=True,
        internal=True,
    )
    # The store's options go on each table: Faust's RocksDB store reads only the table's `options` (an
    # app-level `rocksdb_options` is silently ignored, which left Faust's 64 MiB x 3 write buffers and 2 GiB
    # block cache per table partition in place). A dict per table: the store pops keys from the one it is
    # given. The memory store ignores them.
    return app.Table(
        name,
        default=None,
        partitions=settings.partitions,
        changelog_topic=changelog,
        options=rocksdb_options(settings),
    )


def declare_tables(app: faust.App, settings: Settings) -> Tables:
    return Tables(
        users=StateTable(declare_table(app, settings, "users"), stored_profile),
        preferences=StateTable(declare_table(app, settings, "preferences"), stored_preferences),
        delivered=StateTable(declare_table(app, settings, "delivered")),
        digests=StateTable(declare_table(app, settings, "digests")),
        throttles=StateTable(declare_table(app, settings, "throttles")),
        inbox=StateTable(declare_table(app, settings, "inbox")),
    )
