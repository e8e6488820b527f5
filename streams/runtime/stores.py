"""Where a worker keeps its tables, and when what it kept on disk can be trusted.

On RocksDB a table partition keeps, beside its values, the changelog offset it has read up to, so a restart
reads only the changelog's tail. That holds after a clean stop. After a crash the store may hold values whose
changelog records never reached the broker (a value is stored when it is set, its changelog record goes out
at the next flush): a digest bucket whose scheduled release was never produced would then never be sent. So,
as Kafka Streams does with its checkpoint file, a clean stop leaves a mark, and a start without it reads the
tables back from the changelogs as a memory store would."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from kernel.settings import Settings

log = logging.getLogger(__name__)

CLEAN_STOP_MARK = ".clean-stop"


def store_url(settings: Settings) -> str:
    return "rocksdb://" if settings.table_store == "rocksdb" else "memory://"


def tables_dir(settings: Settings) -> Path:
    """Faust's data directory for this app: one per app id, so apps sharing HERALD_DATA_DIR never mix."""
    return settings.data_dir / settings.app_id


def rocksdb_options(settings: Settings) -> dict[str, Any]:
    # Faust's defaults (64 MiB write buffers, three of them, and a 2 GiB block cache, per table partition)
    # would let 5 tables x 8 partitions grow to gigabytes.
    return {
        "write_buffer_size": settings.rocksdb_write_buffer_bytes,
        "max_write_buffer_number": 2,
        "block_cache_size": settings.rocksdb_block_cache_bytes,
        "block_cache_compressed_size": 0,
        "max_open_files": settings.rocksdb_max_open_files,
    }


def claim_tables(directory: Path) -> bool:
    """Before the worker opens its stores: keep what a clean stop left (True), or remove what a crash left
    (False), so the tables are read back from the changelogs. Either way the mark is gone while the worker
    runs."""
    mark = directory / CLEAN_STOP_MARK
    if mark.exists():
        mark.unlink()
        return True
    if directory.exists() and any(directory.iterdir()):
        log.warning(
            "the last run did not stop cleanly: its tables on disk are removed and read back from the "
            "changelogs"
        )
        shutil.rmtree(directory)
    return False


def mark_clean_stop(directory: Path) -> None:
    """After the stores are closed on a clean stop: the next start may trust them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CLEAN_STOP_MARK).touch()
