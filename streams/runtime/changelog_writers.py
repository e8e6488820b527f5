"""Writing a run of changelog records straight into a table's Faust store, as Faust's own recovery would leave
it: the last record of each key wins, a tombstone (no value) deletes the key, and on RocksDB the partition's
persisted changelog offset moves in the same write batch as the values. The bulk recovery
(streams.runtime.bulk_recovery) uses these instead of Faust's per-record path; `persist_offset` is the other
direction's bookkeeping, for changelog records the worker wrote itself."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from faust.models.base import Model
from faust.stores import memory as faust_memory
from faust.stores import rocksdb as faust_rocksdb
from faust.tables.table import Table as FaustTable
from faust.types import TP
from faust.utils import json as faust_json


class ChangelogWriter(Protocol):
    def write(self, partition: int, records: Sequence[Any]) -> bool:
        """Apply `records` (aiokafka ConsumerRecords of one changelog partition, in offset order, raw key and
        value bytes); False, with nothing written, if this worker does not hold the partition's store."""
        ...


class MemoryWriter:
    """Faust's memory store: decoded keys and values in a dict, and each key's partition (Faust drops the keys
    of partitions no longer assigned when a recovery completes)."""

    def __init__(self, store: Any, key: Callable[[bytes | None], Any], value: Callable[[bytes], Any]) -> None:
        self._data = store.data
        self._partitions = store._key_partition
        self._key = key
        self._value = value

    def write(self, partition: int, records: Sequence[Any]) -> bool:
        data, partitions, decode_key, decode_value = self._data, self._partitions, self._key, self._value
        for record in records:
            key = decode_key(record.key)
            if record.value is None:
                data.pop(key, None)
                partitions.pop(key, None)
            else:
                data[key] = decode_value(record.value)
                partitions[key] = partition
        return True


class RocksDBWriter:
    """Faust's RocksDB store (rocksdict): raw key and value bytes, one write batch per run, the partition's
    persisted offset in it. Only a partition whose database the store has open is written: opening one here
    would bring back a partition a rebalance has just closed."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def write(self, partition: int, records: Sequence[Any]) -> bool:
        db = self._store._dbs.get(partition)
        if db is None:
            return False
        batch = cast(Any, faust_rocksdb).rocksdict.WriteBatch(raw_mode=True)  # as Faust's store imports it
        for record in records:
            if record.value is None:
                batch.delete(record.key)
            else:
                batch.put(record.key, record.value)
        batch.put(self._store.offset_key, str(records[-1].offset).encode())
        db.write(batch)
        return True


def writer_for(table: Any) -> ChangelogWriter | None:
    """A writer for a plain Faust table on the memory or RocksDB (rocksdict) store; None for anything Faust
    recovers with more than a store write per record (a changelog callback, windows, a global or partitioner
    table, another store), which is left to Faust's own path."""
    if type(table) is not FaustTable or table.is_global or table.use_partitioner:
        return None
    if table.window is not None or table._on_changelog_event is not None:
        return None
    store = table.data
    if type(store) is faust_memory.Store:
        topic: Any = table.changelog_topic
        serializers = table.app.serializers
        loads_key = _loader(serializers.loads_key, topic.key_type, topic.key_serializer)
        loads_value = _loader(serializers.loads_value, topic.value_type, topic.value_serializer)
        to_key, to_value = table._to_key, table._to_value

        # As Faust decodes a changelog event (faust/serializers/schemas.py) and its memory store applies it.
        def key(raw: bytes | None) -> Any:
            return to_key(loads_key(raw))

        def value(raw: bytes) -> Any:
            return to_value(loads_value(raw))

        return MemoryWriter(store, key, value)
    if type(store) is faust_rocksdb.Store and store.use_rocksdict:
        return RocksDBWriter(store)
    return None


def _loader(loads: Callable[..., Any], typ: Any, serializer: Any) -> Callable[[bytes | None], Any]:
    """Faust's decoding of a key or value (`Registry.loads_key` / `loads_value`). For its json codec with no
    model type, the same steps without the layers around them (a third of the cost): Faust's json `loads`
    (orjson where installed), then a model only for a payload that names one (its `__faust` key)."""
    if typ is None and serializer == "json":
        json_loads: Callable[[bytes], Any] = cast(Any, faust_json).loads  # typed for str, takes bytes too
        reconstruct = Model._maybe_reconstruct
        blessed = Model._blessed_key

        def json_payload(raw: bytes | None) -> Any:
            if raw is None:
                return None
            payload = json_loads(raw)
            return reconstruct(payload) if type(payload) is dict and blessed in payload else payload

        return json_payload
    return functools.partial(loads, typ, serializer=serializer)


def persist_offset(table: Any, tp: TP, offset: int) -> None:
    """Note that `table`'s changelog partition `tp` is written up to `offset`, as Faust's callback on each
    changelog record it sends does (`Collection._on_changelog_sent`): a RocksDB store keeps it, and recovers
    only what follows on a restart. The memory store keeps nothing. A partition whose database is not open
    (a rebalance closed it since the write) is left alone: noting it would open it again."""
    store = table.data
    if not isinstance(store, faust_rocksdb.Store) or tp.partition not in store._dbs:
        return
    if table.app.in_transaction:
        table.app.tables.persist_offset_on_commit(store, tp, offset)
    else:
        store.set_persisted_offset(tp, offset)
