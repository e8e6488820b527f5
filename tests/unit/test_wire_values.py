"""Every enumerated value that leaves Herald is documented: each enumeration in `schemas/` (status outcomes
and reasons, dead-letter reasons and stages, WebSocket error and close codes) and each bounded metric label
has a table in docs/, holding exactly the values the code can write. The checks are also run on enumerations
with a member added, to show that they fail when a value is added without documentation."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from adapters.garbage_collector import LABEL_VALUES as GC_LABELS
from gateway.metrics import LABEL_VALUES as GATEWAY_LABELS
from gateway.metrics import GatewayMetrics
from schemas.deadletter import DeadLetterStage
from schemas.reasons import DEFER_REASONS, SKIP_REASONS, DecisionReason, DeliveryReason, RejectReason
from schemas.status import Outcome
from schemas.websocket import CLOSE_CODES, CLOSE_MESSAGE_TOO_BIG, CloseReason, ErrorCode
from streams.ops.bounce_webhook import LABEL_VALUES as WEBHOOK_LABELS
from streams.ops.bounce_webhook import WebhookMetrics
from streams.ops.metrics import LABEL_VALUES as WORKER_LABELS
from streams.ops.metrics import WorkerMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs"
BACKTICKED = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\]\(([A-Z-]+\.md)#([a-z0-9-]+)\)")

# Each enumeration, with the page and heading of its table (the values in its first column).
ENUM_TABLES: list[tuple[str, str, type[StrEnum]]] = [
    ("WIRE-FORMATS.md", "Outcomes", Outcome),
    ("WIRE-FORMATS.md", "Decision reasons", DecisionReason),
    ("WIRE-FORMATS.md", "Delivery reasons", DeliveryReason),
    ("WIRE-FORMATS.md", "Rejection reasons", RejectReason),
    ("WIRE-FORMATS.md", "Dead-letter stages", DeadLetterStage),
    ("WEBSOCKET.md", "Error codes", ErrorCode),
]
ENUM_IDS = [enum.__name__ for _, _, enum in ENUM_TABLES]
LABELS = {**WORKER_LABELS, **WEBHOOK_LABELS, **GATEWAY_LABELS, **GC_LABELS}
# Labels that name things of the deployment rather than values Herald chooses (docs/METRICS.md says so).
UNENUMERATED_LABELS = {"provider", "agent", "topic", "partition", "table", "version", "component"}


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def table(page: str, anchor: str) -> list[list[str]]:
    """The body rows (cells) of the first table under the heading of `page` whose anchor is `anchor`."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.startswith("#") and slug(line.lstrip("#")) == anchor), None
    )
    assert start is not None, f"docs/{page} has no heading #{anchor}"
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows or line.startswith("#"):
            break
    assert rows, f"docs/{page}#{anchor} has no table"
    return rows[2:]  # after the header and its rule


def values(cell: str) -> set[str]:
    """The values a cell names: in backticks, or the first column of each table it links to."""
    named = set(BACKTICKED.findall(LINK.sub("]", cell)))
    for page, anchor in LINK.findall(cell):
        named |= first_column(table(page, anchor))
    return named


def first_column(rows: Iterable[list[str]]) -> set[str]:
    return {value for row in rows for value in BACKTICKED.findall(row[0])}


def disagreement(what: str, documented: set[str], written: Iterable[str]) -> list[str]:
    code = {str(value) for value in written}
    return [f"{what}: `{v}` is written but not documented" for v in sorted(code - documented)] + [
        f"{what}: `{v}` is documented but never written" for v in sorted(documented - code)
    ]


def check_enum(page: str, heading: str, enum: type[StrEnum]) -> list[str]:
    return disagreement(f"docs/{page}#{slug(heading)}", first_column(table(page, slug(heading))), enum)


def check_close_codes(codes: Mapping[str, int]) -> list[str]:
    rows = table("WEBSOCKET.md", "close-codes")
    documented = {f"{row[0]} {''.join(BACKTICKED.findall(row[1]))}".strip() for row in rows}
    written = {f"{code} {reason}" for reason, code in codes.items()} | {str(CLOSE_MESSAGE_TOO_BIG)}
    return disagreement("docs/WEBSOCKET.md#close-codes", documented, written)


def check_labels(labels: Mapping[tuple[str, str], frozenset[str]]) -> list[str]:
    documented: dict[tuple[str, str], set[str]] = {}
    for metrics, label, cell in table("METRICS.md", "label-values"):
        for metric in BACKTICKED.findall(metrics):
            documented[(metric, label.strip("`"))] = values(cell)
    problems = [f"{metric}{{{label}}} is not in the table" for metric, label in labels.keys() - documented]
    problems += [
        f"{metric}{{{label}}} is documented but not declared" for metric, label in documented.keys() - labels
    ]
    for key in sorted(labels.keys() & documented.keys()):
        problems += disagreement(f"{key[0]}{{{key[1]}}}", documented[key], labels[key])
    return problems


def with_member_added(enum: type[StrEnum]) -> type[StrEnum]:
    return StrEnum(enum.__name__, {**{m.name: m.value for m in enum}, "ADDED": "added_without_docs"})


@pytest.mark.parametrize(("page", "heading", "enum"), ENUM_TABLES, ids=ENUM_IDS)
def test_every_member_is_documented_and_nothing_else(page: str, heading: str, enum: type[StrEnum]) -> None:
    assert check_enum(page, heading, enum) == []


@pytest.mark.parametrize(("page", "heading", "enum"), ENUM_TABLES, ids=ENUM_IDS)
def test_a_member_added_without_documentation_fails(page: str, heading: str, enum: type[StrEnum]) -> None:
    problems = check_enum(page, heading, with_member_added(enum))
    assert problems == [f"docs/{page}#{slug(heading)}: `added_without_docs` is written but not documented"]


def test_decision_reasons_say_which_outcomes_they_go_with() -> None:
    rows = table("WIRE-FORMATS.md", "decision-reasons")
    documented = {BACKTICKED.findall(row[0])[0]: set(re.findall(r"skipped|deferred", row[1])) for row in rows}
    assert {r for r, outcomes in documented.items() if "skipped" in outcomes} == SKIP_REASONS
    assert {r for r, outcomes in documented.items() if "deferred" in outcomes} == DEFER_REASONS


def test_every_close_code_and_reason_is_documented() -> None:
    assert check_close_codes(CLOSE_CODES) == []


def test_a_close_reason_added_without_documentation_fails() -> None:
    added = {**{reason.value: code for reason, code in CLOSE_CODES.items()}, "added_without_docs": 4999}
    assert check_close_codes(added) == [
        "docs/WEBSOCKET.md#close-codes: `4999 added_without_docs` is written but not documented"
    ]
    moved = {**{reason.value: code for reason, code in CLOSE_CODES.items()}, CloseReason.DRAINING.value: 4007}
    assert len(check_close_codes(moved)) == 2  # 4007 draining undocumented, 1001 draining never written


def test_every_bounded_label_value_is_documented() -> None:
    assert check_labels(LABELS) == []


def test_a_label_value_or_label_added_without_documentation_fails() -> None:
    key = ("herald_notifications_skipped_total", "reason")
    assert check_labels({**LABELS, key: LABELS[key] | {"added_without_docs"}}) == [
        "herald_notifications_skipped_total{reason}: `added_without_docs` is written but not documented"
    ]
    assert check_labels({**LABELS, ("herald_retries_total", "stage"): frozenset({"x"})}) == [
        "herald_retries_total{stage} is not in the table"
    ]


def test_every_label_of_every_metric_is_declared_or_names_the_deployment() -> None:
    registry = CollectorRegistry()
    metric_sets = (WorkerMetrics(registry, "test"), GatewayMetrics(registry), WebhookMetrics(registry))
    undeclared = set()
    for metrics in metric_sets:
        for metric in vars(metrics).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            # prometheus_client keeps a metric's name (without `_total`) and label names to itself.
            name = metric._name + ("_total" if metric._type == "counter" else "")
            for label in metric._labelnames:
                if label not in UNENUMERATED_LABELS and (name, label) not in LABELS:
                    undeclared.add(f"{name}{{{label}}}")
    assert undeclared == set()
