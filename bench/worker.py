"""Herald's worker as `herald worker` runs it, with benchmark-only changes: `BENCH_STORE=rocksdb://` puts the
tables in Faust's RocksDB store (rocksdict) instead of the memory store the production app fixes,
`BENCH_ROUTING_ONLY=1` declares the routing and state agents alone (Herald's routing stage, as the peers run
the same steps: bench.peers), and Faust's terminal spinner is off (see `_QuietWorker`)."""

from __future__ import annotations

import os
import sys
from typing import Any

import faust

import streams.app


class _QuietWorker(faust.Worker):
    """The bench runs the worker at `-l warn` to keep its logs small. At WARN and above Faust turns on a
    terminal spinner that lowers the root logger to DEBUG and spins once per record, so every `logger.debug`
    in Faust's per-message paths builds a LogRecord: about 10% slower table recovery (bench/RESULTS.md). Faust
    drops the spinner itself below WARN, which is how production (`-l info`) runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None


class _BenchApp(streams.app.HeraldApp):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if os.environ.get("BENCH_STORE"):
            kwargs["store"] = os.environ["BENCH_STORE"]
        kwargs["Worker"] = _QuietWorker
        super().__init__(*args, **kwargs)
        if os.environ.get("BENCH_PROBE"):
            from bench.probe import install

            install(self, os.environ["HERALD_TOPIC_EVENTS"], f"{os.environ['BENCH_PROBE']}.{os.getpid()}")


def _routing_only() -> None:
    """No delivery, scheduling or inbox agents: the worker routes and keeps the users' state, nothing else."""
    import streams.bootstrap

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    for name in ("register_delivery", "register_scheduling", "register_inbox"):
        setattr(streams.bootstrap, name, nothing)


def main() -> None:
    if os.environ.get("BENCH_ROUTING_ONLY"):
        _routing_only()
    streams.app.HeraldApp = _BenchApp  # type: ignore[misc]
    # BENCH_WORKER_LOG=info for the worker's own account of a run (with BENCH_KEEP_LOGS=1 to keep it).
    sys.argv = ["herald", "worker", "-l", os.environ.get("BENCH_WORKER_LOG", "warn")]  # Faust's CLI reads it
    streams.app.main(sys.argv)


if __name__ == "__main__":
    main()
