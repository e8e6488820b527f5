"""The gateway's Prometheus metrics, built against a registry that is passed in (a fresh one per test)."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from schemas.websocket import AuthReason, CloseReason, RecoveryOutcome

# Why an authenticated connection is refused, and why the server closes one (a slow client is counted apart).
REFUSAL_REASONS: Final = frozenset(
    (CloseReason.TOO_MANY_CONNECTIONS, CloseReason.NOT_READY, CloseReason.DRAINING)
)
CLOSE_REASONS: Final = frozenset(
    (CloseReason.EXPIRED_TOKEN, CloseReason.IDLE_TIMEOUT, CloseReason.GOING_AWAY)
)

# Every value each bounded label takes: docs/METRICS.md lists them, and a test keeps the two equal.
LABEL_VALUES: Final[dict[tuple[str, str], frozenset[str]]] = {
    ("herald_gateway_auth_failures_total", "reason"): frozenset(AuthReason),
    ("herald_gateway_connections_refused_total", "reason"): REFUSAL_REASONS,
    ("herald_gateway_connections_closed_total", "reason"): CLOSE_REASONS,
    ("herald_gateway_recoveries_total", "outcome"): frozenset(RecoveryOutcome),
}


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections_open = Gauge(
            "herald_gateway_connections_open",
            "WebSocket connections currently authenticated and open on this instance.",
            registry=registry,
        )
        self.messages_pushed = Counter(
            "herald_gateway_messages_pushed_total",
            "Notification frames written to a client socket (live and recovered).",
            registry=registry,
        )
        self.auth_failures = Counter(
            "herald_gateway_auth_failures_total",
            "Connections and token refreshes refused because of their token or origin, by reason.",
            ["reason"],
            registry=registry,
        )
        self.connections_refused = Counter(
            "herald_gateway_connections_refused_total",
            "Authenticated connections refused, by reason.",
            ["reason"],
            registry=registry,
        )
        self.connections_closed = Counter(
            "herald_gateway_connections_closed_total",
            "Connections closed by the server for a reason other than a slow client, by reason.",
            ["reason"],
            registry=registry,
        )
        self.slow_client_disconnects = Counter(
            "herald_gateway_slow_client_disconnects_total",
            "Connections closed because their outbound queue was full.",
            registry=registry,
        )
        self.recoveries = Counter(
            "herald_gateway_recoveries_total",
            "Reconnections that asked to recover from a last-seen notification, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.inbox_changes = Counter(
            "herald_gateway_inbox_changes_total",
            "Read/archive changes from clients that the inbox's owner applied and answered.",
            registry=registry,
        )
        self.preference_changes = Counter(
            "herald_gateway_preference_changes_total",
            "Users' preference changes written to the preferences topic from the preference center.",
            registry=registry,
        )
        self.invalid_records = Counter(
            "herald_gateway_invalid_records_total",
            "Records on the inbox feed without a key, a frame or the headers it needs, skipped.",
            registry=registry,
        )
        # Start every label at zero so a rate() over a fresh instance is defined.
        for reason in AuthReason:
            self.auth_failures.labels(reason=reason.value)
        for outcome in RecoveryOutcome:
            self.recoveries.labels(outcome=outcome.value)
        for refusal in REFUSAL_REASONS:
            self.connections_refused.labels(reason=refusal.value)
        for closing in CLOSE_REASONS:
            self.connections_closed.labels(reason=closing.value)
