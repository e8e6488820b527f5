"""The Faust app and `main()`: the `herald` command (`herald worker -l info`, `herald dev`, …)."""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

import faust
import mode.loop
from faust.app.base import BootStrategy

from adapters import garbage_collector
from adapters.broker.faust_transport import Transport
from kernel.errors import ConfigurationError
from kernel.logs import worker_logging_config
from kernel.ports import ensure_port_free
from kernel.settings import RECORD_FRAMING_BYTES, Settings, load_settings
from kernel.topics import TopicNames
from streams.runtime.bulk_recovery import BulkRecoveryTableManager
from streams.runtime.provisioning import provision_topics
from streams.runtime.stores import claim_tables, mark_clean_stop, store_url, tables_dir


def herald_version() -> str:
    try:
        return version("herald")
    except PackageNotFoundError:
        return "0+unknown"


class _NoWebBoot(BootStrategy):
    # Faust's web server serves table contents (personal data) at /table. `web_enabled=False` is not enough:
    # `herald worker` defaults to `--with-web` and turns it back on, so the boot strategy refuses it instead.
    enable_web = False


class HeraldApp(faust.App):
    BootStrategy = _NoWebBoot
    fetch_max_wait_ms: int = Transport.fetch_max_wait_ms
    idle_fetch_max_wait_ms: int = Transport.idle_fetch_max_wait_ms
    batched_topics: frozenset[str] = frozenset()
    delayed_topics: frozenset[str] = frozenset()
    delayed_fetch_interval_ms: int = 0
    # Where RocksDB tables are kept (None on the memory store): marked as cleanly stopped on shutdown.
    tables_on_disk: Path | None = None

    async def on_first_start(self) -> None:
        # Faust makes its data directory (HERALD_DATA_DIR/<app id>) but not the directories above it.
        Path(self.conf.datadir).parent.mkdir(parents=True, exist_ok=True)
        await super().on_first_start()

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        # Called once the stores are closed, and only on a stop that got this far: a crash leaves no mark.
        if self.tables_on_disk is not None:
            mark_clean_stop(self.tables_on_disk)

    def _new_transport(self) -> Any:
        # Faust picks its transport by the URL's scheme; Herald's checks the end offsets recovery reads to,
        # sets the fetch wait, hands the hot topics over a fetched batch at a time and fetches the
        # delayed ones less often.
        transport = Transport(self.conf.broker_consumer, self)
        transport.fetch_max_wait_ms = self.fetch_max_wait_ms
        transport.idle_fetch_max_wait_ms = self.idle_fetch_max_wait_ms
        transport.batched_topics = self.batched_topics
        transport.delayed_topics = self.delayed_topics
        transport.delayed_fetch_interval_ms = self.delayed_fetch_interval_ms
        return transport


def create_app(settings: Settings) -> faust.App:
    app = HeraldApp(
        settings.app_id,
        broker=settings.broker_url,
        store=store_url(settings),
        datadir=str(tables_dir(settings)),
        autodiscover=False,
        # Tables come back from their changelogs by a bulk load, then Faust's per-record path for the rest.
        TableManager=BulkRecoveryTableManager,
        # Herald decodes payloads itself with pydantic; Faust's codecs stay raw, so pickle is never used.
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # The worker's health and metrics are served by OpsServer, never by Faust's web server.
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # The outbox never hands over a record over HERALD_MAX_RECORD_BYTES; the producer takes exactly that.
        producer_max_request_size=settings.max_record_bytes + RECORD_FRAMING_BYTES,
        # The outbox builds its own record batches (adapters.broker.batch_producer): larger ones mean fewer
        # produce requests for a batch of routed notifications. A record over it still goes alone.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        # How often acknowledged offsets are committed: what a crash replays is at most about this much.
        broker_commit_interval=settings.commit_interval_seconds,
        stream_processing_timeout=settings.stream_stall_seconds,
        broker_rebalance_timeout=settings.rebalance_timeout_seconds,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.heartbeat_interval_seconds,
        logging_config=worker_logging_config(settings),
        # A check for RocksDB's persisted offsets against the high-water mark. The memory store persists
        # nothing to check; on the embedded broker the check tripped over Tansu's short end offsets (now
        # corrected in adapters.broker.offsets) and stopped workers for nothing.
        recovery_consistency_check=False,
        # Where other workers forward a gateway's request for an inbox this worker owns (streams.inbox.api).
        canonical_url=settings.advertised_worker_url,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.idle_fetch_max_wait_ms = settings.idle_fetch_max_wait_ms
    if settings.table_store == "rocksdb":
        app.tables_on_disk = tables_dir(settings)
    names = TopicNames.from_settings(settings)
    app.batched_topics = names.batch_fed
    app.delayed_topics = names.delayed
    app.delayed_fetch_interval_ms = settings.delayed_fetch_interval_ms
    return app


PRODUCER_BATCH_BYTES = 256 * 1024


def _subcommand(argv: list[str]) -> str | None:
    return next((arg for arg in argv[1:] if not arg.startswith("-")), None)


def main(argv: list[str] | None = None) -> NoReturn:
    # Imported here: the composition root and the CLI both build on this module's app.
    from streams.bootstrap import create_worker
    from streams.cli.commands import register_commands

    argv = sys.argv if argv is None else argv
    try:
        settings = load_settings()
        app: Any
        if _subcommand(argv) == "worker":
            ensure_port_free(settings.worker_host, settings.worker_port, "HERALD_WORKER_PORT")
            garbage_collector.tune(settings.gc_gen0_threshold)
            # uvloop, as the gateway runs on: the worker's event loop is where its time goes (socket writes to
            # the broker and the providers, task switches); delivering a backlog took about 9% less CPU on it
            # (bench/RESULTS.md, eleventh session). Set before the app exists: it takes its loop when built.
            mode.loop.use("uvloop")
            app = create_worker(settings).app
            asyncio.run(provision_topics(settings))
            if settings.table_store == "rocksdb":
                claim_tables(tables_dir(settings))
        else:
            # Other commands need the CLI and the settings, not the rules and templates of a worker.
            app = create_app(settings)
    except ConfigurationError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    register_commands(settings)
    app.main()
    raise SystemExit(0)  # app.main() exits by itself; this only tells the type checker
