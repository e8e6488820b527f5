"""Which store the worker's tables go in, and when what is on disk is kept (streams.runtime.stores)."""

from __future__ import annotations

from pathlib import Path

from kernel.settings import Settings
from streams.runtime.stores import (
    CLEAN_STOP_MARK,
    claim_tables,
    mark_clean_stop,
    rocksdb_options,
    store_url,
    tables_dir,
)


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_rocksdb_with_an_external_kafka_memory_on_the_embedded_broker_unless_chosen() -> None:
    assert store_url(_settings()) == "memory://"  # the embedded broker keeps nothing across restarts
    assert store_url(_settings(broker="kafka://kafka:9092")) == "rocksdb://"
    assert store_url(_settings(broker="kafka://kafka:9092", store="memory")) == "memory://"
    assert store_url(_settings(store="rocksdb")) == "rocksdb://"


def test_each_app_has_its_own_directory_and_bounded_rocksdb_buffers(tmp_path: Path) -> None:
    settings = _settings(data_dir=tmp_path, app_id="herald-eu", rocksdb_block_cache_bytes=1 << 20)
    assert tables_dir(settings) == tmp_path / "herald-eu"
    options = rocksdb_options(settings)
    assert options["block_cache_size"] == 1 << 20
    assert options["write_buffer_size"] * options["max_write_buffer_number"] <= 16 * 1024 * 1024


def test_tables_left_by_a_clean_stop_are_kept(tmp_path: Path) -> None:
    (tmp_path / "v1" / "tables").mkdir(parents=True)
    (tmp_path / "v1" / "tables" / "users-0.db").write_text("kept")
    mark_clean_stop(tmp_path)
    assert claim_tables(tmp_path) is True
    assert (tmp_path / "v1" / "tables" / "users-0.db").read_text() == "kept"
    assert not (tmp_path / CLEAN_STOP_MARK).exists()  # a crash from now on must not look clean


def test_tables_left_by_a_crash_are_removed(tmp_path: Path) -> None:
    (tmp_path / "v1" / "tables").mkdir(parents=True)
    (tmp_path / "v1" / "tables" / "users-0.db").write_text("maybe ahead of the changelog")
    assert claim_tables(tmp_path) is False
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_first_start_has_nothing_to_claim(tmp_path: Path) -> None:
    assert claim_tables(tmp_path / "never-used") is False


def test_each_rocksdb_table_partition_opens_with_the_configured_buffers_and_cache(tmp_path: Path) -> None:
    # Faust's RocksDB store reads its options from the table, not the app: this opens a real table partition
    # and reads back what RocksDB itself recorded in the database's OPTIONS file.
    from streams.app import create_app
    from streams.runtime.tables import declare_tables

    settings = _settings(
        data_dir=tmp_path,
        store="rocksdb",
        rocksdb_write_buffer_bytes=1 << 20,
        rocksdb_block_cache_bytes=3 << 20,
        rocksdb_max_open_files=32,
    )
    app = create_app(settings)
    tables = declare_tables(app, settings)
    for name in ("users", "inbox"):
        store = tables.by_name(name).faust.data
        db = store._db_for_partition(0)
        written = sorted(Path(store.partition_path(0)).glob("OPTIONS-*"))[-1].read_text()
        assert "write_buffer_size=1048576\n" in written, name
        assert "max_write_buffer_number=2\n" in written, name
        assert "max_open_files=32\n" in written, name
        assert db.property_int_value("rocksdb.block-cache-capacity") == 3 << 20, name
        db.close()
