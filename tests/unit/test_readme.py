"""The README and docs/ are the user's manual: the README's first lines give the two set-up commands, the
settings page lists every setting and the metrics page every metric."""

from __future__ import annotations

import re
from pathlib import Path

from kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SETTINGS = (ROOT / "docs" / "SETTINGS.md").read_text(encoding="utf-8")
METRICS = (ROOT / "docs" / "METRICS.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"^\| `(HERALD_[A-Z0-9_]+)` \|", SETTINGS, flags=re.MULTILINE))
    expected = {f"HERALD_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), "settings missing from the tables of docs/SETTINGS.md"
    assert documented - expected == set(), "docs/SETTINGS.md documents settings that do not exist"


def test_first_lines_give_the_two_commands() -> None:
    block = README.split("```sh\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2
    assert block[0].endswith("herald dev")
    assert block[1] == "./scripts/test"
    script = (ROOT / "scripts" / "test").read_text(encoding="utf-8")
    assert "pytest" in script


def test_every_metric_is_documented() -> None:
    from prometheus_client import CollectorRegistry

    from gateway.metrics import GatewayMetrics
    from streams.ops.bounce_webhook import WebhookMetrics
    from streams.ops.lag import COMMITTED, END, FAILURES, LAG, REFRESHED, TABLE_KEYS
    from streams.ops.metrics import WorkerMetrics

    registry = CollectorRegistry()
    WorkerMetrics(registry, "test")
    GatewayMetrics(registry)
    WebhookMetrics(registry)
    names = {m.name for m in registry.collect()} | {LAG, COMMITTED, END, REFRESHED, TABLE_KEYS}
    names |= {FAILURES.removesuffix("_total")}
    undocumented = {n for n in names if f"`{n}" not in METRICS}
    assert undocumented == set()
