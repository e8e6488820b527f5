"""The garbage collector's settings and its pause histogram (adapters/garbage_collector.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from adapters import garbage_collector
from adapters.garbage_collector import GC_PAUSE, PAUSE_BUCKETS, Pauses


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def _sample(registry: CollectorRegistry, suffix: str, generation: str, le: str | None = None) -> float:
    labels = {"generation": generation} | ({"le": le} if le is not None else {})
    value = registry.get_sample_value(GC_PAUSE + suffix, labels)
    assert value is not None, (suffix, labels)
    return value


def test_each_collection_is_counted_by_generation_in_cumulative_buckets() -> None:
    registry = CollectorRegistry()
    pauses = Pauses().install(registry)
    try:
        before = _sample(registry, "_count", "2")
        gc.collect()
        gc.collect(0)
        assert _sample(registry, "_count", "2") == before + 1
        assert _sample(registry, "_count", "0") >= 1
        assert _sample(registry, "_sum", "2") > 0
        counts = [_sample(registry, "_bucket", "2", str(bound)) for bound in PAUSE_BUCKETS]
        assert counts == sorted(counts)  # cumulative
        assert _sample(registry, "_bucket", "2", "+Inf") == _sample(registry, "_count", "2")
    finally:
        pauses.uninstall(registry)
    assert registry.get_sample_value(GC_PAUSE + "_count", {"generation": "2"}) is None
    assert pauses._note not in gc.callbacks


@pytest.mark.usefixtures("restored")
def test_tune_sets_only_the_youngest_generations_threshold() -> None:
    _, gen1, gen2 = gc.get_threshold()
    garbage_collector.tune(50_000)
    assert gc.get_threshold() == (50_000, gen1, gen2)


@pytest.mark.usefixtures("restored")
def test_freeze_keeps_what_is_alive_out_of_collections_and_collects_cycles_first() -> None:
    class Node:
        other: object

    cycle = Node()
    cycle.other = cycle
    gone = weakref.ref(cycle)
    del cycle  # garbage, reachable only from itself: collected first, not frozen for good
    kept = [Node() for _ in range(100)]
    frozen = garbage_collector.freeze()
    assert gone() is None
    assert frozen >= len(kept)
    # Frozen objects may still die (another thread of the test process freed one in CI), never join.
    assert len(kept) <= gc.get_freeze_count() <= frozen
    assert not any(type(obj) is Node for obj in gc.get_objects())  # the kept nodes are out of reach now
