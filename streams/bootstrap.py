"""The worker's composition root: every dependency built once from the settings, passed to each part's
agents explicitly, and every background service and closer attached to the app."""

from __future__ import annotations

import logging
from typing import Any, cast

from prometheus_client import CollectorRegistry, ProcessCollector
from starlette.routing import BaseRoute

from adapters import garbage_collector
from adapters.http.read_limits import ReadLimits
from kernel import privacy
from kernel.errors import ConfigurationError
from kernel.settings import Settings
from schemas.channels import Channel
from streams.app import create_app, herald_version
from streams.delivery.agents import register_delivery
from streams.delivery.providers import build_providers
from streams.inbox.agents import register_inbox
from streams.inbox.api import InboxApi
from streams.ops.bounce_webhook import WebhookMetrics, bounce_webhook_route, load_public_key, publisher
from streams.ops.internal import OwnerRoutes, Ownership
from streams.ops.lag import ConsumerLag, TableKeys
from streams.ops.metrics import WorkerMetrics
from streams.ops.receipts import ReceiptMemory, Receipts, status_publisher, twilio_status_route
from streams.ops.services import ConsumerLagService, OpsServer
from streams.routing.agents import register_routing
from streams.routing.rendering import TemplateStore, check_templates
from streams.routing.rules import RuleBook
from streams.runtime.closing import Closing
from streams.runtime.outbox import Outbox, Settler, kafka_publisher
from streams.runtime.tables import declare_tables
from streams.runtime.topics import declare_topics
from streams.runtime.worker import Worker, utc_now
from streams.scheduling.agents import register_scheduling
from streams.state.agents import register_state
from streams.state.preferences_api import PreferencesApi
from streams.state.rules_feed import RuleSource
from streams.state.services import RulesFeed

LAG_REFRESH_SECONDS = 15.0

log = logging.getLogger("herald.worker")


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


def webhook_routes(settings: Settings, worker: Worker, registry: CollectorRegistry) -> list[BaseRoute]:
    """The provider webhooks on the ops endpoint: SendGrid's when its verification key is configured, and with
    HERALD_PUBLIC_BASE_URL (delivery receipts) Twilio's status callback when Twilio is configured."""
    if settings.public_base_url is None and settings.sendgrid_webhook_public_key is None:
        return []
    metrics = WebhookMetrics(registry)
    receipts = None
    routes: list[BaseRoute] = []
    if settings.public_base_url is not None:
        status_topic = worker.app.topic(
            worker.topics.names.status,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            replicas=settings.replication_factor,
        )
        receipts = Receipts(status_publisher(status_topic), ReceiptMemory())
        if settings.twilio_auth_token is not None:
            routes.append(
                twilio_status_route(
                    auth_token=settings.twilio_auth_token.get_secret_value(),
                    public_base_url=settings.public_base_url,
                    receipts=receipts,
                    clock=worker.clock,
                    webhook_metrics=metrics,
                )
            )
    if settings.sendgrid_webhook_public_key is None:
        return routes
    try:
        key = load_public_key(settings.sendgrid_webhook_public_key)
    except ValueError as exc:
        raise ConfigurationError(f"HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY: {exc}") from None
    route = bounce_webhook_route(
        publish=publisher(worker.topics.users),
        public_key=key,
        clock=worker.clock,
        metrics=metrics,
        path=settings.sendgrid_webhook_path,
        tolerance_seconds=settings.sendgrid_webhook_tolerance_seconds,
        max_body_bytes=settings.sendgrid_webhook_max_body_bytes,
        receipts=receipts,
    )
    return [*routes, route]


def build_inbox_api(settings: Settings, worker: Worker) -> InboxApi | None:
    """The gateways' way to the inboxes this worker owns; not served without HERALD_INTERNAL_SECRET."""
    if settings.internal_secret is None:
        return None
    names = worker.topics.names
    ownership = Ownership(
        worker.app, names.delivery[Channel.INAPP], names.changelogs["inbox"], settings.partitions
    )
    return InboxApi(
        ownership,
        worker.tables.inbox.faust.data.get,
        secret=settings.internal_secret.get_secret_value(),
        reply_bytes=settings.gateway_list_reply_bytes,
        own_url=settings.advertised_worker_url,
        timeout_seconds=settings.gateway_owner_timeout_seconds,
    )


def build_preferences_api(settings: Settings, worker: Worker) -> PreferencesApi | None:
    """The preference center's way to the preferences this worker owns; not served without
    HERALD_INTERNAL_SECRET."""
    if settings.internal_secret is None:
        return None
    names = worker.topics.names
    ownership = Ownership(worker.app, names.preferences, names.changelogs["preferences"], settings.partitions)
    routes = OwnerRoutes(
        ownership,
        secret=settings.internal_secret.get_secret_value(),
        own_url=settings.advertised_worker_url,
        timeout_seconds=settings.gateway_owner_timeout_seconds,
    )
    return PreferencesApi(routes, lambda: worker.rules.book, worker.tables.preferences.faust.data.get)


def create_worker(settings: Settings, *, registry: CollectorRegistry | None = None) -> Worker:
    """Wire the worker: the app, its topics, tables, agents and services, with real or given dependencies."""
    privacy.configure(settings.pseudonym_key)
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
    topics = declare_topics(app, settings)
    tables = declare_tables(app, settings)
    clock = utc_now
    publish = kafka_publisher(app)

    def new_outbox() -> Outbox:
        return Outbox(publish, topics.names, tables, metrics, clock, settings.max_record_bytes)

    worker = Worker(
        settings=settings,
        app=app,
        topics=topics,
        tables=tables,
        metrics=metrics,
        rules=rules,
        templates=templates,
        settler=Settler(new_outbox, metrics),
        clock=clock,
    )
    providers = build_providers(settings)
    register_state(worker)
    register_routing(worker)
    register_scheduling(worker)
    register_delivery(worker, providers)
    register_inbox(worker)
    inbox_api = build_inbox_api(settings, worker)
    preferences_api = build_preferences_api(settings, worker)

    garbage_collector.Pauses().install(registry)
    # The process's CPU, memory and open files (`process_*`), as the gateway exports them from Prometheus's
    # default registry: a worker whose CPU nears a full core is queueing (docs/OPERATIONS.md, scaling).
    ProcessCollector(registry=registry)

    async def freeze_state(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Once the tables are read back (after each rebalance): what is alive now is the worker's lasting
        # state, kept out of the collector's full walks from here on.
        frozen = garbage_collector.freeze()
        log.info("objects kept out of garbage collection", extra={"frozen": frozen})

    # mode types the handler with mypy_extensions' NamedArg, which no plain signature matches.
    app.on_rebalance_complete.connect(cast(Any, freeze_state))

    lag = ConsumerLag(settings.bootstrap_servers, app.conf.id, lambda: app.topics.acking_topics, registry)
    TableKeys(
        {
            "users": tables.users.key_count,
            "preferences": tables.preferences.key_count,
            "delivered": tables.delivered.key_count,
            "inbox": tables.inbox.key_count,
        },
        registry,
    )
    feed = RulesFeed(rules, settings.bootstrap_servers, topics.names.rules)
    app.add_dependency(ConsumerLagService(lag, interval=LAG_REFRESH_SECONDS))
    app.add_dependency(feed)
    app.add_dependency(
        OpsServer(
            app,
            registry,
            settings.worker_host,
            settings.worker_port,
            extra_checks=[feed.readiness],
            extra_routes=[
                *webhook_routes(settings, worker, registry),
                *(inbox_api.routes() if inbox_api is not None else ()),
                *(preferences_api.routes() if preferences_api is not None else ()),
            ],
            limits=ReadLimits(
                header_seconds=settings.worker_header_timeout_seconds,
                body_seconds=settings.worker_body_timeout_seconds,
                max_body_bytes=settings.sendgrid_webhook_max_body_bytes,
            ),
        )
    )
    internal = [api.aclose for api in (inbox_api, preferences_api) if api is not None]
    app.add_dependency(Closing([providers.aclose, *internal]))
    return worker
