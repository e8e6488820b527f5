"""What the worker's agents are given: its dependencies, typed and built once by `streams.bootstrap`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import faust

from kernel.settings import Settings
from streams.ops.metrics import WorkerMetrics
from streams.routing.rendering import TemplateStore
from streams.runtime.outbox import Settler
from streams.runtime.tables import Tables
from streams.runtime.topics import Topics
from streams.state.rules_feed import RuleSource


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Worker:
    settings: Settings
    app: faust.App
    topics: Topics
    tables: Tables
    metrics: WorkerMetrics
    rules: RuleSource
    templates: TemplateStore
    settler: Settler
    clock: Callable[[], datetime] = utc_now
