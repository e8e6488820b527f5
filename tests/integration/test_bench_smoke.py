"""The benchmark harness at a tiny size: the pass-through, pipeline and peers measurements run end to end and
write a result file with non-zero rates (no timing assertions: CI machines vary)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_pipeline_measurement_writes_rates(tmp_path: Path) -> None:
    completed = subprocess.run(
        # The peers phase adds about 20 s; after the pipeline, it sets Herald's figures beside its own.
        [sys.executable, "-m", "bench", "--size", "tiny", "--only", "pipeline,peers", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert {"machine", "sizes", "limit", "pipeline", "latency", "elapsed_seconds"} <= result.keys()
    assert result["limit"]["events_per_second"] > 0
    assert set(result["limit"]["by_client"]) == {"aiokafka", "confluent"}
    pipeline = result["pipeline"]
    assert pipeline["events_per_second"] > 0
    assert pipeline["notifications_per_second"] > 0
    assert pipeline["notifications_completed"] > 0
    assert 0 < pipeline["ratio_to_limit"]
    # Two latency runs, at half the drained rate and at a quarter, each with what the worker used meanwhile,
    # and each counting only its own events.
    half, quarter = result["latency"], result["latency_quarter"]
    assert quarter["offered_events_per_second"] < half["offered_events_per_second"]
    for run in (half, quarter):
        # One email and one SMS per event, none of the other run's (a straggler may come after the wait).
        assert 0 < run["provider"]["count"] <= 2 * run["events"]
        assert 0 < run["by_channel"]["inapp_topic"]["count"] <= run["events"]
        assert {"p50_ms", "p95_ms", "p99_ms", "max_ms"} <= run["provider"].keys()
        assert run["cores_used"]["workers"] > 0 and run["worker_cpu_us_per_notification"] > 0
        assert run["worker_main_thread"]["ran"] > 0 and run["worker_main_thread"]["waited_for_a_core"] >= 0
    # Where the cores went over the window: each part's share, and the machine's, never above its cores.
    cores = pipeline["cores_used"]
    assert {"workers", "sinks", "broker", "harness", "machine", "steal"} <= cores.keys()
    assert cores["workers"] > 0 and cores["broker"] > 0
    assert all(used >= 0 for used in cores.values())
    assert cores["machine"] <= (os.cpu_count() or 1) + 0.01
    assert (tmp_path / "result.png").stat().st_size > 0
    assert "herald pipeline" in completed.stdout

    peers = result["peers"]
    assert set(peers["routing"]) == {"steps alone", "aiokafka", "quixstreams"}
    for name, run in peers["routing"].items():
        assert run["events"] == peers["events"], name
        assert run["records"] == 3 * run["events"], name  # the bench's rule: in-app, email, SMS
        assert run["rejected"] == 0, name
        assert run["events_per_second"] > 0, name
    # Herald's side comes from the pipeline phase: present, but a tiny run's steady window may hold too few
    # arrivals to give a rate, so only its presence is checked.
    assert peers["herald_routing_events_per_second"] is not None
    assert all(ratio is not None for ratio in peers["herald_routing_to"].values())
    # Herald's routing stage alone (a worker with only its routing agents) routed the whole backlog.
    assert peers["herald_routing_alone"]["inapp_records_seen"] >= peers["events"]
    assert set(peers["herald_routing_alone_to"]) == {"aiokafka", "quixstreams"}
    # CPU per event, each process's own. The peers time theirs in-process; Herald's worker is read from /proc
    # in 10 ms ticks, and this tiny backlog may be routed within one: then there is no ratio, never a zero.
    assert all(peers["routing"][name]["cpu_seconds"] > 0 for name in ("aiokafka", "quixstreams"))
    herald_cpu = peers["herald_routing_alone"]["cpu_seconds"]
    assert herald_cpu >= 0
    ratios = peers["herald_routing_alone_cpu_to"]
    assert set(ratios) == {"aiokafka", "quixstreams"}
    assert all((ratio is None) == (herald_cpu == 0) for ratio in ratios.values())
    assert (peers["herald_routing_alone"]["cpu_us_per_event"] is None) == (herald_cpu == 0)
    assert all(peers["routing"][name]["cpu_us_per_event"] > 0 for name in ("aiokafka", "quixstreams"))
    assert all(ratio is None or ratio > 0 for ratio in ratios.values())
    for channel, ceiling in peers["delivery_ceiling"].items():
        assert ceiling["notifications_per_second"] > 0, channel
        assert ceiling["received_by_sink"] >= ceiling["notifications"], channel
        assert peers["herald_delivery_to_ceiling"][channel] is not None, channel
        assert ceiling["cpu_us_per_notification"] > 0, channel
    # The pipeline's CPU per notification against a fixed program's per event, both of this run.
    assert peers["herald_notification_cpu_to_aiokafka_event_cpu"] == pytest.approx(
        pipeline["worker_cpu_us_per_notification"] / peers["routing"]["aiokafka"]["cpu_us_per_event"]
    )
    assert peers["sdk_cpu_us_per_event"] == sum(
        ceiling["cpu_us_per_notification"] for ceiling in peers["delivery_ceiling"].values()
    )
    assert "routing peer: quixstreams" in completed.stdout
