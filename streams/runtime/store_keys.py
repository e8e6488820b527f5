"""Walking a table's keys from a sweep that yields to the agents between chunks, on either store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def walk_keys(store: Any) -> Iterator[Any]:
    """A Faust table store's keys. A dict (the memory store) cannot be walked while the agents change it
    between chunks, so its keys are copied first (references only); RocksDB's iterator reads a consistent view
    of the database and is walked as it goes, never holding every key at once."""
    held = store if isinstance(store, dict) else getattr(store, "data", None)
    if isinstance(held, dict):
        return iter(list(held))
    return iter(store.keys())
