"""The Faust app and `main()`: the `herald` command (`herald worker -l info`, `herald dev`, …)."""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

import faust
from faust.app.base import BootStrategy
from prometheus_client import CollectorRegistry
from starlette.routing import BaseRoute

from adapters.broker.faust_transport import Transport
from kernel.errors import ConfigurationError
from kernel.logs import worker_logging_config
from kernel.ports import ensure_port_free
from kernel.settings import Settings, load_settings
from streams.delivery.channels import register_channels
from streams.delivery.providers import build_providers
from streams.ops.bounce_webhook import WebhookMetrics, bounce_webhook_route, load_public_key, publisher
from streams.ops.lag import ConsumerLag, ConsumerLagService, TableKeys
from streams.ops.metrics import WorkerMetrics
from streams.ops.server import OpsServer
from streams.routing.agents import register_router
from streams.routing.rendering import TemplateStore, check_templates
from streams.routing.rules import RuleBook
from streams.runtime.context import WorkerContext
from streams.runtime.provisioning import provision_topics
from streams.runtime.tables import declare_table
from streams.runtime.topics import declare_topics
from streams.scheduling.agents import Scheduler
from streams.state.agents import register_directory
from streams.state.rules_feed import RulesFeed, RuleSource


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

    def _new_transport(self) -> Any:
        # Faust picks its transport by the URL's scheme; Herald's checks the end offsets recovery reads to.
        return Transport(self.conf.broker_consumer, self)


def create_app(settings: Settings) -> faust.App:
    return HeraldApp(
        settings.app_id,
        broker=settings.broker_url,
        store="memory://",
        datadir=str(settings.data_dir),
        autodiscover=False,
        # Herald decodes payloads itself with pydantic; Faust's codecs stay raw, so pickle is never used.
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # The worker's health and metrics are served by OpsServer, never by Faust's web server.
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_rebalance_timeout=settings.rebalance_timeout_seconds,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.heartbeat_interval_seconds,
        logging_config=worker_logging_config(settings),
        # A check for RocksDB's persisted offsets against the high-water mark. The memory store persists
        # nothing to check; on the embedded broker the check tripped over Tansu's short end offsets (now
        # corrected in adapters.broker.offsets) and stopped workers for nothing.
        recovery_consistency_check=False,
    )


def load_rules(settings: Settings, templates: TemplateStore) -> RuleBook:
    try:
        rules = RuleBook.from_file(settings.rules_file)
    except OSError as exc:
        raise ConfigurationError(
            f"HERALD_RULES_FILE: cannot read {settings.rules_file}: {exc.strerror}"
        ) from None
    except ValueError as exc:
        raise ConfigurationError(f"HERALD_RULES_FILE: {settings.rules_file}: {exc}") from None
    try:
        check_templates(rules.rules, templates)
    except ValueError as exc:
        raise ConfigurationError(f"HERALD_TEMPLATES_DIR: {settings.templates_dir}: {exc}") from None
    return rules


def bounce_routes(settings: Settings, ctx: WorkerContext, registry: CollectorRegistry) -> list[BaseRoute]:
    """The SendGrid bounce webhook on the ops endpoint, when its verification key is configured."""
    if settings.sendgrid_webhook_public_key is None:
        return []
    try:
        key = load_public_key(settings.sendgrid_webhook_public_key)
    except ValueError as exc:
        raise ConfigurationError(f"HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY: {exc}") from None
    route = bounce_webhook_route(
        publish=publisher(ctx.topics.users),
        public_key=key,
        clock=ctx.clock,
        metrics=WebhookMetrics(registry),
        path=settings.sendgrid_webhook_path,
        tolerance_seconds=settings.sendgrid_webhook_tolerance_seconds,
    )
    return [route]


def create_worker(settings: Settings, *, registry: CollectorRegistry | None = None) -> WorkerContext:
    """Wire the worker: the app, its topics, table and agents, with real or given dependencies."""
    if not settings.templates_dir.is_dir():
        raise ConfigurationError(f"HERALD_TEMPLATES_DIR: {settings.templates_dir} is not a directory")
    templates = TemplateStore(settings.templates_dir)
    app = create_app(settings)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = WorkerMetrics(registry, herald_version())
    rules = RuleSource(
        load_rules(settings, templates),
        lambda book: check_templates(book.rules, templates),
        on_change=metrics.rules_changed,
    )
    ctx = WorkerContext(
        settings=settings,
        app=app,
        topics=declare_topics(app, settings),
        metrics=metrics,
        rules=rules,
        templates=templates,
        users=declare_table(app, settings, "users"),
        preferences=declare_table(app, settings, "preferences"),
        delivered=declare_table(app, settings, "delivered"),
        digests=declare_table(app, settings, "digests"),
        throttles=declare_table(app, settings, "throttles"),
    )
    ctx.scheduler = Scheduler(ctx, [*ctx.topics.delivery.values(), ctx.topics.routed])
    ctx.scheduler.register()
    register_directory(ctx)
    register_router(ctx)
    register_channels(ctx, build_providers(settings))
    lag = ConsumerLag(settings.bootstrap_servers, app.conf.id, lambda: app.topics.acking_topics, registry)
    app.add_dependency(ConsumerLagService(lag, interval=15.0))
    TableKeys(
        {
            "users": lambda: len(ctx.users),
            "preferences": lambda: len(ctx.preferences),
            "delivered": lambda: len(ctx.delivered),
        },
        registry,
    )
    feed = RulesFeed(rules, settings.bootstrap_servers, settings.topic_rules)
    app.add_dependency(feed)
    app.add_dependency(
        OpsServer(
            app,
            registry,
            settings.worker_host,
            settings.worker_port,
            extra_checks=[feed.readiness],
            extra_routes=bounce_routes(settings, ctx, registry),
        )
    )
    return ctx


def _subcommand(argv: list[str]) -> str | None:
    return next((arg for arg in argv[1:] if not arg.startswith("-")), None)


def main(argv: list[str] | None = None) -> NoReturn:
    from streams.cli.commands import register_commands

    argv = sys.argv if argv is None else argv
    try:
        settings = load_settings()
        app: Any
        if _subcommand(argv) == "worker":
            ensure_port_free(settings.worker_host, settings.worker_port, "HERALD_WORKER_PORT")
            app = create_worker(settings).app
            asyncio.run(provision_topics(settings))
        else:
            # Other commands need the CLI and the settings, not the rules and templates of a worker.
            app = create_app(settings)
    except ConfigurationError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    register_commands(settings)
    app.main()
    raise SystemExit(0)  # app.main() exits by itself; this only tells the type checker
