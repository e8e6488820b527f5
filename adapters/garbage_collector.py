"""Python's cyclic garbage collector, set for a long-lived process that holds a lot of state, and its pauses
as a metric.

A full collection walks every tracked object, and nothing else runs meanwhile: with a worker's tables and
buffers that was 65 to 450 ms every few seconds under load, the largest part of the in-app hop's tail (bench/
RESULTS.md, eighth session). Two changes bound it: young collections far less often (at Python's default of
700 allocations, objects of a batch still in flight are promoted and soon force a full collection), and the
objects alive once a worker is ready (modules, the app, the tables just read back) moved out of the
collector's reach with `gc.freeze`, so a full collection walks only what came after."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

GC_PAUSE = "herald_gc_pause_seconds"
PAUSE_BUCKETS: Sequence[float] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GENERATIONS = 3
# Every value of the bounded label, as docs/METRICS.md lists them.
LABEL_VALUES = {(GC_PAUSE, "generation"): frozenset(str(generation) for generation in range(GENERATIONS))}


def tune(gen0_threshold: int) -> None:
    """Collect the youngest generation every `gen0_threshold` allocations (Python's other thresholds kept)."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def freeze() -> int:
    """Move every object alive now out of all future collections; returns how many are frozen. A garbage
    cycle alive now would never be collected, so one full collection goes first (one pause, where a
    rebalance or a start already holds the worker)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class Pauses(Collector):
    """Each collection's duration by generation, as a histogram. The collector calls back in the middle of
    any allocation, so the callback only adds to plain lists (no lock, no allocation of tracked objects);
    the histogram is built when it is scraped."""

    def __init__(self) -> None:
        self._buckets = [[0] * len(PAUSE_BUCKETS) for _ in range(GENERATIONS)]
        self._counts = [0] * GENERATIONS
        self._sums = [0.0] * GENERATIONS
        self._began = 0.0

    def install(self, registry: CollectorRegistry) -> Pauses:
        registry.register(self)
        gc.callbacks.append(self._note)
        return self

    def uninstall(self, registry: CollectorRegistry) -> None:
        registry.unregister(self)
        if self._note in gc.callbacks:
            gc.callbacks.remove(self._note)

    def _note(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        seconds = time.perf_counter() - self._began
        generation = info["generation"]
        self._counts[generation] += 1
        self._sums[generation] += seconds
        buckets = self._buckets[generation]
        for index, bound in enumerate(PAUSE_BUCKETS):
            if seconds <= bound:
                buckets[index] += 1
                break

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            GC_PAUSE, "Pauses of Python's garbage collector, by generation.", labels=["generation"]
        )
        for generation in range(GENERATIONS):
            cumulative, running = [], 0
            for bound, count in zip(PAUSE_BUCKETS, self._buckets[generation], strict=True):
                running += count
                cumulative.append((_bound(bound), running))
            cumulative.append(("+Inf", self._counts[generation]))
            family.add_metric([str(generation)], cumulative, sum_value=self._sums[generation])
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(GC_PAUSE, "Pauses of Python's garbage collector, by generation.")


def _bound(value: float) -> str:
    return str(float(value))  # as prometheus_client writes `le`: 0.001, 1.0
