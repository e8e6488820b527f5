"""The worker's Prometheus metrics, built against a registry that is passed in (a fresh one per test)."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from kernel.topics import RETRYING_CHANNELS
from schemas.channels import Channel
from schemas.deadletter import DeadLetterStage
from schemas.inbox import InboxAction
from schemas.reasons import DEFER_REASONS, SKIP_REASONS, DeliveryReason, RejectReason
from schemas.status import Outcome

# Notification latencies run from milliseconds (in-app) to minutes (a provider backing off).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

_PROVIDER_CHANNELS = frozenset(RETRYING_CHANNELS)  # the channels delivered through providers
# Every value each bounded label takes: docs/METRICS.md lists them, and a test keeps the two equal.
LABEL_VALUES: Final[dict[tuple[str, str], frozenset[str]]] = {
    ("herald_events_rejected_total", "reason"): frozenset(RejectReason),
    ("herald_notifications_routed_total", "channel"): frozenset(Channel),
    ("herald_notifications_deferred_total", "channel"): frozenset(Channel),
    ("herald_notifications_deferred_total", "reason"): DEFER_REASONS,
    ("herald_notifications_skipped_total", "channel"): frozenset(Channel),
    # A channel whose template fails is skipped (and dead-lettered alone) while the others go.
    ("herald_notifications_skipped_total", "reason"): SKIP_REASONS | {RejectReason.TEMPLATE_ERROR},
    ("herald_provider_attempts_total", "channel"): _PROVIDER_CHANNELS,
    ("herald_provider_attempts_total", "outcome"): frozenset({Outcome.DELIVERED, Outcome.FAILED}),
    ("herald_provider_call_seconds", "channel"): _PROVIDER_CHANNELS,
    ("herald_end_to_end_seconds", "channel"): frozenset(Channel),
    ("herald_retries_total", "channel"): _PROVIDER_CHANNELS,
    ("herald_retries_total", "reason"): frozenset(DeliveryReason),
    ("herald_addresses_removed_total", "channel"): frozenset({Channel.PUSH, Channel.SMS}),
    ("herald_scheduled_total", "reason"): DEFER_REASONS,
    ("herald_released_total", "reason"): DEFER_REASONS,
    ("herald_inbox_commands_total", "action"): frozenset(InboxAction),
    ("herald_dead_letters_total", "stage"): frozenset(DeadLetterStage),
    ("herald_dead_letters_total", "reason"): frozenset(RejectReason) | frozenset(DeliveryReason),
}


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry, version: str) -> None:
        self.registry = registry
        self.build_info = Info("herald_build", "Herald build information", registry=registry)
        self.build_info.info({"version": version, "component": "worker"})
        self.events_consumed = Counter(
            "herald_events_consumed_total", "Domain events read from the events topic", registry=registry
        )
        self.events_rejected = Counter(
            "herald_events_rejected_total",
            "Domain events that could not be routed, by reason",
            ["reason"],
            registry=registry,
        )
        self.notifications_routed = Counter(
            "herald_notifications_routed_total",
            "Notifications produced to a delivery topic, by channel",
            ["channel"],
            registry=registry,
        )
        self.notifications_deferred = Counter(
            "herald_notifications_deferred_total",
            "Notifications held back (a rule's delay, quiet hours, throttling), by channel and reason",
            ["channel", "reason"],
            registry=registry,
        )
        self.notifications_skipped = Counter(
            "herald_notifications_skipped_total",
            "Notifications not produced, by channel and reason",
            ["channel", "reason"],
            registry=registry,
        )
        self.deliveries = Counter(
            "herald_provider_attempts_total",
            "Provider calls, by channel, provider and outcome",
            ["channel", "provider", "outcome"],
            registry=registry,
        )
        self.profiles_applied = Counter(
            "herald_profiles_applied_total",
            "User profiles written to (or deleted from) the directory table",
            registry=registry,
        )
        self.profiles_skipped = Counter(
            "herald_profile_updates_skipped_total",
            "Conditional profile updates not applied because their precondition no longer held",
            registry=registry,
        )
        self.retries = Counter(
            "herald_retries_total",
            "Notifications parked on a retry topic, by channel and reason",
            ["channel", "reason"],
            registry=registry,
        )
        self.inbox_stored = Counter(
            "herald_inbox_stored_total",
            "In-app notifications kept in their recipient's inbox and pushed to gateways (replays excluded)",
            registry=registry,
        )
        self.inbox_commands = Counter(
            "herald_inbox_commands_total",
            "Read/archive commands from clients applied to an inbox, by action",
            ["action"],
            registry=registry,
        )
        self.inbox_expired = Counter(
            "herald_inbox_entries_expired_total",
            "Inbox entries dropped past HERALD_INBOX_RETENTION_DAYS or HERALD_INBOX_SIZE",
            registry=registry,
        )
        self.dedup_expired = Counter(
            "herald_dedup_entries_expired_total",
            "Delivered-ids entries deleted once past HERALD_DEDUP_RETENTION_SECONDS",
            registry=registry,
        )
        self.addresses_removed = Counter(
            "herald_addresses_removed_total",
            "Push tokens and phone numbers removed from profiles after a provider reported them gone",
            ["channel"],
            registry=registry,
        )
        self.rules_offset = Gauge(
            "herald_rules_offset",
            "Offset on the rules topic of the ruleset in force (-1: the rules file)",
            registry=registry,
        )
        self.rules_offset.set(-1)
        self.rules_rejected = Counter(
            "herald_rules_rejected_total", "Published rulesets refused by this worker", registry=registry
        )
        self.preferences_applied = Counter(
            "herald_preferences_applied_total",
            "User preference updates merged into (or deleted from) the preferences table",
            registry=registry,
        )
        self.profiles_rehomed = Counter(
            "herald_profiles_rehomed_total",
            "Profiles found on a partition other than their user's, forwarded to the right one",
            registry=registry,
        )
        self.scheduled = Counter(
            "herald_scheduled_total",
            "Records put on the scheduler's delay topics, by reason",
            ["reason"],
            registry=registry,
        )
        self.released = Counter(
            "herald_released_total",
            "Scheduled records released when due, by reason",
            ["reason"],
            registry=registry,
        )
        self.batch_failures = Counter(
            "herald_batch_failures_total",
            "Batches whose produced records the broker did not take, run again until it does, by agent",
            ["agent"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "herald_dead_letters_total",
            "Records written to the dead-letter topic, by stage and reason",
            ["stage", "reason"],
            registry=registry,
        )
        self.provider_latency = Histogram(
            "herald_provider_call_seconds",
            "Provider call latency",
            ["channel", "provider"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.end_to_end_latency = Histogram(
            "herald_end_to_end_seconds",
            "From the event's occurred_at to the provider accepting the notification",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def rules_changed(self, offset: int | None, accepted: bool) -> None:
        if accepted:
            self.rules_offset.set(-1 if offset is None else offset)
        else:
            self.rules_rejected.inc()
