"""Plain helpers shared by the tests (fixtures live in conftest.py): which broker to run against."""

from __future__ import annotations

import os
from enum import StrEnum
from functools import cache


class BrokerKind(StrEnum):
    EXTERNAL = "external"  # HERALD_BROKER, used as given
    DOCKER = "docker"  # a Kafka container through testcontainers
    EMBEDDED = "embedded"  # Tansu on a free loopback port


@cache
def chosen_broker_kind() -> BrokerKind:
    """Decided once per test run, so the report header and the fixture agree."""
    if external_broker_url():
        return BrokerKind.EXTERNAL
    if docker_answers():
        return BrokerKind.DOCKER
    return BrokerKind.EMBEDDED


def external_broker_url() -> str | None:
    return os.environ.get("HERALD_BROKER", "").strip() or None


def docker_answers(timeout: float = 2.0) -> bool:
    """True if a Docker engine answers a ping; quick and silent when there is none."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
    except Exception:
        return False  # no socket, no permission, bad DOCKER_HOST: all mean "no Docker" here
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def bootstrap_servers_of(url: str) -> list[str]:
    """`host:port` list from a Faust URL, split on `,` or `;` as Herald's settings do."""
    hosts = url.removeprefix("kafka://")
    return [host.strip() for host in hosts.replace(";", ",").split(",") if host.strip()]


# The user property a reliability case's figures travel in, from the case (or a pytest-xdist worker) to the
# run's summary (tests/conftest.py).
RELIABILITY_FIGURES = "reliability_figures"
