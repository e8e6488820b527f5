"""promtool on what Herald ships: the rules (and their alerts' behaviour), the Prometheus configuration,
and the worker's and gateway's metric expositions."""

from __future__ import annotations

import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from gateway.metrics import GatewayMetrics
from streams.ops.lag import ConsumerLag, PartitionOffsets, TableKeys
from streams.ops.metrics import WorkerMetrics
from tests.prometheus_tools import exposition_problems, promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_configuration_is_valid(tmp_path: Path) -> None:
    # The configuration names the rules file at its path in the container; check it beside a copy.
    config = (ROOT / "deploy" / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules.yml" in config
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/rules.yml", "rules.yml"))
    shutil.copy(RULES, tmp_path / "rules.yml")
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def worker_exposition() -> str:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, "0.1.0")
    metrics.events_consumed.inc()
    metrics.events_rejected.labels(reason="invalid_event").inc()
    metrics.notifications_routed.labels(channel="email").inc()
    metrics.deliveries.labels(channel="email", provider="smtp", outcome="delivered").inc()
    metrics.provider_latency.labels(channel="email", provider="smtp").observe(0.2)
    metrics.end_to_end_latency.labels(channel="email").observe(0.4)
    metrics.dead_letters.labels(stage="route", reason="unknown_user").inc()
    lag = ConsumerLag(["127.0.0.1:1"], "herald", lambda: [], registry)
    lag.update([PartitionOffsets("herald.events", 0, committed=1, end=2)])
    TableKeys({"users": lambda: 2}, registry)
    return generate_latest(registry).decode()


def test_worker_exposition_passes_promtool() -> None:
    text = worker_exposition()
    assert "herald_consumer_lag_messages{" in text
    assert exposition_problems(text) == ""


def test_gateway_exposition_passes_promtool() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.connections_open.inc()
    metrics.messages_pushed.inc()
    assert exposition_problems(generate_latest(registry).decode()) == ""


def test_promtool_does_find_problems() -> None:
    # So that a passing check above means something.
    assert exposition_problems("# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n") != ""


ALERT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'herald_dead_letters_total{{stage="route",reason="unknown_user",instance="w1"}}'
        values: '0+10x30'
      - series: 'herald_provider_attempts_total{{channel="email",provider="smtp",outcome="failed"}}'
        values: '0+30x30'
      - series: 'herald_provider_attempts_total{{channel="email",provider="smtp",outcome="delivered"}}'
        values: '0+30x30'
      # The lag grows to 5k at 25m, then holds: the alert's value at 30m is 5k whichever minute promtool
      # took the recording rule's sample from (it is evaluated in another group, in no fixed order).
      - series: 'herald_consumer_lag_messages{{topic="herald.events",partition="0",instance="w1"}}'
        values: '0+200x25 5000x15'
      - series: 'herald_consumer_lag_messages{{topic="herald.events",partition="0",instance="w2"}}'
        values: '0+200x25 5000x15'
      - series: 'herald_gateway_slow_client_disconnects_total{{instance="g1"}}'
        values: '0+60x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: HeraldDeadLetters
        exp_alerts:
          - exp_labels: {{severity: warning, stage: route, reason: unknown_user}}
            exp_annotations:
              summary: "Records go to the DLQ at 166.7m/s (stage route, reason unknown_user)"
              description: "Read herald.dlq for the detail of each record; fix the cause, then replay."
      - eval_time: 20m
        alertname: HeraldProviderErrorRatioHigh
        exp_alerts:
          - exp_labels: {{severity: warning, channel: email, provider: smtp}}
            exp_annotations: {{summary: "smtp (email) fails 50% of its calls"}}
      - eval_time: 30m
        alertname: HeraldConsumerLagGrowing
        exp_alerts:
          - exp_labels: {{severity: warning, topic: herald.events}}
            exp_annotations: {{summary: "The workers fall behind on herald.events: 5k messages and growing"}}
      - eval_time: 20m
        alertname: HeraldGatewaySlowClients
        exp_alerts:
          - exp_labels: {{severity: warning}}
            exp_annotations: {{summary: "The gateways close 1 slow clients per second"}}
      - eval_time: 20m
        alertname: HeraldEndToEndLatencyHigh
        exp_alerts: []
    promql_expr_test:
      # Two workers report the same partition: the lag is counted once.
      - expr: herald:consumer_lag_messages:topic
        eval_time: 10m
        exp_samples:
          - labels: 'herald:consumer_lag_messages:topic{{topic="herald.events"}}'
            value: 2000
      - expr: herald:provider_error_ratio:rate5m
        eval_time: 10m
        exp_samples:
          - labels: 'herald:provider_error_ratio:rate5m{{channel="email",provider="smtp"}}'
            value: 0.5
"""


def test_alerts_fire_on_the_conditions_they_describe(tmp_path: Path) -> None:
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(ALERT_TESTS.format(rules=RULES))
    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
