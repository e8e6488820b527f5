"""The gateway's Prometheus metrics, built against a registry that is passed in (a fresh one per test)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.auth import AuthReason


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections_open = Gauge(
            "herald_gateway_connections_open",
            "WebSocket connections currently authenticated and open on this instance.",
            registry=registry,
        )
        self.messages_pushed = Counter(
            "herald_gateway_messages_pushed_total",
            "Notification frames written to a client socket.",
            registry=registry,
        )
        self.auth_failures = Counter(
            "herald_gateway_auth_failures_total",
            "Connections refused because of their token, by reason.",
            ["reason"],
            registry=registry,
        )
        self.slow_client_disconnects = Counter(
            "herald_gateway_slow_client_disconnects_total",
            "Connections closed because their outbound queue was full.",
            registry=registry,
        )
        self.invalid_records = Counter(
            "herald_gateway_invalid_records_total",
            "Records on the in-app topic that did not decode as an InAppNotification and were skipped.",
            registry=registry,
        )
        # Start every reason at zero so a rate() over a fresh instance is defined.
        for reason in AuthReason:
            self.auth_failures.labels(reason=reason.value)
