"""A real Prometheus scrapes a running worker and gateway; PromQL sees the counts of a known set of events,
and promtool accepts both live expositions."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.broker.embedded import free_port
from adapters.email.sink import SmtpSink
from tests.integration.stack import Stack, produce, wait_for_metric, wait_ready
from tests.prometheus_tools import exposition_problems, tool

pytestmark = pytest.mark.integration

SECRET = "test-secret-" + "p" * 32


def event(event_id: str, recipients: list[str], type_: str = "order.shipped") -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "type": type_,
            "occurred_at": "2026-11-24T10:00:00Z",
            "recipients": recipients,
            "data": {"order_id": "A-1", "carrier": "DHL", "items": ["Tea"]},
        }
    ).encode()


async def query(client: httpx.AsyncClient, base: str, promql: str) -> dict[str, float]:
    """Instant query: {label set as "k=v,...": value}."""
    body = (await client.get(f"{base}/api/v1/query", params={"query": promql})).json()
    assert body["status"] == "success", body
    return {
        ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k != "__name__"): float(r["value"][1])
        for r in body["data"]["result"]
    }


async def eventually(client: httpx.AsyncClient, base: str, promql: str, expected: dict[str, float]) -> None:
    seen: dict[str, float] = {}
    for _ in range(150):
        seen = await query(client, base, promql)
        if seen == expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{promql}: {seen} != {expected}")


@pytest.fixture(scope="module")
def observed(stack_factory: Any, smtp_server: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Any:
    host, port = smtp_server.address
    worker_port, gateway_port, prom_port = free_port(), free_port(), free_port()
    stack: Stack = stack_factory(
        HERALD_SMTP_HOST=host,
        HERALD_SMTP_PORT=str(port),
        HERALD_JWT_SECRET=SECRET,
        HERALD_WORKER_PORT=str(worker_port),
        HERALD_GATEWAY_PORT=str(gateway_port),
    )
    worker = stack.spawn("worker", "-l", "info", log_name="worker")
    gateway = stack.spawn("gateway", log_name="gateway")
    tmp: Path = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "herald-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
            {"job_name": "herald-gateway", "static_configs": [{"targets": [f"127.0.0.1:{gateway_port}"]}]},
        ],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))
    log = open(tmp / "prometheus.log", "wb")
    prometheus = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{worker_port}/readyz", worker))
        asyncio.run(wait_ready(f"http://127.0.0.1:{gateway_port}/readyz", gateway))
        asyncio.run(wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", prometheus))
        profile = {"user_id": "alice", "email": "alice@example.com"}
        asyncio.run(
            produce(stack.bootstrap, stack.topic("users"), [(b"alice", json.dumps(profile).encode())])
        )
        asyncio.run(wait_for_metric(stack, "herald_profiles_applied_total", 1))
        yield stack, f"http://127.0.0.1:{prom_port}", worker_port, gateway_port
    except Exception:
        print(stack.log("worker")[-4000:], (tmp / "prometheus.log").read_text()[-2000:])
        raise
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(timeout=15)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait()


async def test_promql_counts_delivered_skipped_and_dead_lettered(observed: Any) -> None:
    stack, prom, worker_port, gateway_port = observed
    await produce(
        stack.bootstrap,
        stack.topic("events"),
        [
            (b"alice", event("e-1", ["alice"])),  # delivered: email by SMTP, in-app to the gateway
            (b"alice", b"{not json"),  # dead-lettered: invalid_event
            (b"alice", event("e-2", ["alice"], type_="invoice.paid")),  # dead-lettered: no_rule
            (b"zed", event("e-3", ["zed"])),  # dead-lettered: unknown_user
        ],
    )
    async with httpx.AsyncClient(timeout=5) as client:
        await eventually(client, prom, "sum(herald_events_consumed_total)", {"": 4})
        await eventually(
            client,
            prom,
            "sum by (reason) (herald_dead_letters_total)",
            {"reason=invalid_event": 1, "reason=no_rule": 1, "reason=unknown_user": 1},
        )
        await eventually(
            client,
            prom,
            'sum by (channel) (herald_provider_attempts_total{outcome="delivered"})',
            {"channel=email": 1},
        )
        # In-app counts from the notification's creation to its being kept in the inbox.
        await eventually(
            client,
            prom,
            "sum by (channel) (herald_end_to_end_seconds_count)",
            {"channel=email": 1, "channel=inapp": 1},
        )
        await eventually(
            client,
            prom,
            'up{job=~"herald-.*"}',
            {
                f"instance=127.0.0.1:{gateway_port},job=herald-gateway": 1,
                f"instance=127.0.0.1:{worker_port},job=herald-worker": 1,
            },
        )

        # Live expositions pass promtool.
        for port in (worker_port, gateway_port):
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            assert exposition_problems(text) == "", port
