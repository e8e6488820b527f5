"""The README is the user's manual: its settings table must list every setting, and its first lines the two
set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

from kernel.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"^\| `(HERALD_[A-Z0-9_]+)` \|", README, flags=re.MULTILINE))
    expected = {f"HERALD_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), "settings missing from the README table"
    assert documented - expected == set(), "the README documents settings that do not exist"


def test_first_lines_give_the_two_commands() -> None:
    block = README.split("```sh\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2
    assert block[0].endswith("herald dev")
    assert block[1] == "./scripts/test"
    script = (Path(__file__).resolve().parents[2] / "scripts" / "test").read_text(encoding="utf-8")
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
    undocumented = {n for n in names if f"`{n}" not in README}
    assert undocumented == set()
