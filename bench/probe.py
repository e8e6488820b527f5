"""A worker's flow and fetch state, written every two seconds as JSON lines to `BENCH_PROBE` (a diagnostic
for runs in which a ready worker processes nothing), with its tables' changelog positions, active and standby
(how far the standbys have read: Herald exports no figure of its own for them; bench.standby waits on it)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any


def _state(app: Any, topic: str) -> dict[str, Any]:
    consumer = app.consumer
    fetcher = app._fetcher
    out: dict[str, Any] = {
        "t": time.time(),
        "in_recovery": app.in_recovery,
        "rebalancing": app.rebalancing,
        "flow_control": app.flow_control.is_active(),
        "flow_active": consumer.flow_active,
        "can_resume_flow": consumer.can_resume_flow.is_set(),
        "fetcher_started": fetcher._started.is_set(),
        "fetcher_stopped": fetcher._stopped.is_set(),
        "fetcher_crashed": fetcher._crashed.is_set(),
        "fetcher_should_stop": fetcher.should_stop,
        "drainer": repr(fetcher._drainer),
        "fetcher_tasks": [repr(t) for t in getattr(fetcher, "_futures", [])][:5],
        "recovery_completed": app.tables.recovery.completed.is_set(),
        "generation": app.consumer_generation_id,
    }
    assignment = consumer.assignment()
    tps = sorted((tp for tp in assignment if tp.topic == topic), key=lambda tp: tp.partition)
    active = consumer._active_partitions
    ak = consumer._thread._consumer
    parts = []
    for tp in tps:
        entry: dict[str, Any] = {
            "p": tp.partition,
            "active": None if active is None else tp in active,
            "paused": tp in consumer._paused_partitions,
            "read": consumer._read_offset.get(tp),
            "committed": consumer._committed_offset.get(tp),
        }
        if ak is not None:
            try:
                state = ak._subscription.subscription.assignment.state_value(tp)
                entry["ak_paused"] = state.paused
                entry["ak_valid"] = state.has_valid_position
                entry["ak_position"] = state._position
                entry["ak_reset"] = state.awaiting_reset
                entry["ak_high"] = ak.highwater(tp)
                entry["ak_buffered"] = tp in ak._fetcher._records
            except Exception as exc:  # a diagnostic: say what failed rather than stop
                entry["ak_error"] = repr(exc)
        parts.append(entry)
    out["partitions"] = parts
    queues = {}
    for channel in getattr(app.topics, "_tp_index", {}).get(tps[0], set()) if tps else ():
        queues[repr(channel)[:60]] = channel.queue.qsize()
    out["queues"] = queues
    return out


def _tables(app: Any) -> dict[str, Any]:
    """Faust's own record of each changelog partition this worker holds: [topic, partition, offset] rows, the
    offset being that of the last record read (None: none yet). A standby's rows are what a takeover starts
    from: Faust applies what it buffered when the rebalance begins (Recovery.on_partitions_revoked)."""
    recovery = app.tables.recovery

    def rows(tps: Any, offsets: Any) -> list[list[Any]]:
        return sorted([tp.topic, tp.partition, offsets.get(tp)] for tp in tps)

    return {
        "standby_replicas": app.conf.table_standby_replicas,
        "active": rows(recovery.active_tps, recovery.active_offsets),
        "standby": rows(recovery.standby_tps, recovery.standby_offsets),
    }


def install(app: Any, topic: str, path: str) -> None:
    @app.task  # type: ignore[untyped-decorator]  # Faust's decorators are untyped
    async def probe() -> None:
        out = Path(path)
        while True:
            await asyncio.sleep(2.0)
            state: dict[str, Any]
            try:
                state = _state(app, topic)
            except Exception as exc:  # a diagnostic: say what failed rather than stop
                state = {"t": time.time(), "error": repr(exc)}
            try:
                state["tables"] = _tables(app)
            except Exception as exc:  # the tables are read apart: a flow-state failure must not hide them
                state["tables_error"] = repr(exc)
            line = json.dumps(state, default=repr)
            with out.open("a") as file:  # noqa: ASYNC230 - a line every two seconds
                file.write(line + "\n")
