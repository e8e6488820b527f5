"""The shipped rules and dashboard name only metrics the code defines, so renaming a metric fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from streams.ops.lag import ConsumerLag, TableKeys
from streams.ops.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "herald.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


def defined_metrics() -> set[str]:
    """Every sample name the worker and gateway can expose."""
    registry = CollectorRegistry()
    WorkerMetrics(registry, "0")
    GatewayMetrics(registry)
    ConsumerLag(["127.0.0.1:1"], "herald", lambda: [], registry)
    TableKeys({}, registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def recorded() -> set[str]:
    return {rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule}


def names_in(expr: str) -> set[str]:
    # Metric names, not label values (quoted) or label names (inside braces).
    without_strings = re.sub(r'"[^"]*"', "", expr)
    without_matchers = re.sub(r"\{[^}]*\}", "", without_strings)
    return set(re.findall(r"\bherald[_:][A-Za-z0-9_:]*", without_matchers))


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_worker_and_gateway_define_the_metrics_the_issue_asks_for() -> None:
    assert {
        "herald_consumer_lag_messages",
        "herald_end_to_end_seconds_bucket",
        "herald_dead_letters_total",
        "herald_gateway_slow_client_disconnects_total",
        "herald_table_keys",
    } <= defined_metrics()


def test_rules_name_only_defined_metrics() -> None:
    known = defined_metrics() | recorded()
    for group in rule_groups():
        for rule in group["rules"]:
            unknown = names_in(rule["expr"]) - known
            assert not unknown, (
                f"{rule.get('record') or rule.get('alert')}: unknown metrics {sorted(unknown)}"
            )


def test_recording_rules_follow_the_level_metric_operations_convention() -> None:
    for name in recorded():
        assert re.fullmatch(r"herald:[a-z0-9_]+:[a-z0-9_]+", name), name


def test_dashboard_uses_defined_metrics_and_recording_rules() -> None:
    known = defined_metrics() | recorded()
    expressions = dashboard_expressions()
    assert expressions
    for expr in expressions:
        assert not names_in(expr) - known, f"{expr}: unknown metrics {sorted(names_in(expr) - known)}"


def test_dashboard_covers_what_an_operator_asks() -> None:
    used = set().union(*(names_in(expr) for expr in dashboard_expressions()))
    assert {
        "herald:events_consumed:rate5m",
        "herald:dead_letters:rate5m",
        "herald:notifications_skipped:rate5m",
        "herald:consumer_lag_messages:topic",
        "herald:end_to_end_seconds:p99_5m",
        "herald:end_to_end_seconds:p50_5m",
        "herald:gateway_connections_open:sum",
    } <= used


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = datasources["datasources"][0]["uid"]
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_alert_has_a_severity_and_a_summary() -> None:
    alerts = [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]
    assert {a["alert"] for a in alerts} >= {
        "HeraldDeadLetters",
        "HeraldProviderErrorRatioHigh",
        "HeraldConsumerLagGrowing",
        "HeraldEndToEndLatencyHigh",
        "HeraldGatewaySlowClients",
    }
    for alert in alerts:
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"]
