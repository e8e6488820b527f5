"""Fixtures shared by all tests: the Kafka-protocol broker the integration tests talk to; and the summary of
the reliability cases' figures."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.broker.embedded import EmbeddedBroker, free_port
from tests.helpers import (
    RELIABILITY_FIGURES,
    BrokerKind,
    bootstrap_servers_of,
    chosen_broker_kind,
    external_broker_url,
)

log = logging.getLogger(__name__)

_BROKER_DESCRIPTIONS = {
    BrokerKind.EXTERNAL: "HERALD_BROKER={url}",
    BrokerKind.DOCKER: "Kafka in Docker (testcontainers), started on first use",
    BrokerKind.EMBEDDED: "embedded Tansu on a free loopback port, started on first use",
}


def pytest_report_header(config: pytest.Config) -> str:
    return "broker: " + _BROKER_DESCRIPTIONS[chosen_broker_kind()].format(url=external_broker_url())


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Faust URL of the session's broker: HERALD_BROKER, else Kafka in Docker, else embedded Tansu."""
    kind = chosen_broker_kind()
    if kind is BrokerKind.EXTERNAL:
        url = external_broker_url()
        assert url is not None
        yield url
    elif kind is BrokerKind.DOCKER:
        # Imported only here: testcontainers is slow to import and useless without Docker.
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            url = f"kafka://{kafka.get_bootstrap_server()}"
            log.info("broker: Kafka container at %s", url)
            yield url
    else:
        log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
        with EmbeddedBroker("127.0.0.1", free_port(), log_path=log_path) as broker:
            log.info("broker: embedded Tansu at %s (pid %s, log %s)", broker.url, broker.pid, log_path)
            yield broker.url


@pytest.fixture(scope="session")
def bootstrap_servers(broker_url: str) -> list[str]:
    """The same broker as `host:port` strings, for plain aiokafka clients."""
    return bootstrap_servers_of(broker_url)


# --- the reliability cases' figures, gathered from the test reports (pytest-xdist's workers send them) -----
_FIGURES: list[dict[str, Any]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _FIGURES.extend(value for name, value in report.user_properties if name == RELIABILITY_FIGURES)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability figures")
    write(f"{'case':28} {'events':>7} {'expect':>7} {'deliv':>7} {'dlq':>5} {'lost':>5} {'dup':>4} faults")
    for f in _FIGURES:
        faults = sum(f["faults_injected"].values()) + f["hostile_inputs"]
        write(
            f"{f['case']:28} {f['events']:>7} {f['expected']:>7} {f['delivered']:>7} {f['dead_lettered']:>5} "
            f"{f['lost']:>5} {f['duplicated']:>4} {faults}"
        )
    path = Path(terminalreporter.config._tmp_path_factory.getbasetemp()) / "reliability-figures.json"
    path.write_text(json.dumps(_FIGURES, indent=2))
    write(f"figures: {path}")
