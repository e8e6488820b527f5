"""Fixtures of the reliability suite: the provider fakes (shared, faults reset per case), deployments that
stop their processes after each case, and the figures each case reports (a JSON file and a summary)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from adapters.email.sink import SmtpSink
from tests.fakes.fcm import make_service_account
from tests.helpers import RELIABILITY_FIGURES
from tests.integration.stack import Stack
from tests.reliability.harness import RETRY_ENV, Deployment, Providers
from tests.reliability.invariants import Figures
from tests.reliability.providers import UnreliableFcm, UnreliableSendGrid, UnreliableSns, UnreliableTwilio

LOG_DIRS: list[Path] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def providers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Providers]:
    smtp = SmtpSink("127.0.0.1", 0)
    smtp.start()
    fakes = [UnreliableSendGrid(), UnreliableTwilio(), UnreliableSns(), UnreliableFcm()]
    for fake in fakes:
        fake.start()
    sendgrid, twilio, sns, fcm = fakes
    assert isinstance(fcm, UnreliableFcm)
    account, public_key = make_service_account(fcm.token_uri, "herald-test")
    fcm.public_key = public_key
    key_file = tmp_path_factory.mktemp("fcm") / "service-account.json"
    key_file.write_text(json.dumps(account))
    yield Providers(smtp, sendgrid, twilio, sns, fcm, key_file)  # type: ignore[arg-type]
    for fake in fakes:
        fake.stop()
    smtp.stop()


@pytest.fixture
async def deployment(
    broker_url: str,
    bootstrap_servers: list[str],
    providers: Providers,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Deployment]:
    providers.reset_faults()
    tmp = Path(tmp_path_factory.mktemp("reliability"))
    LOG_DIRS.append(tmp)
    stack = Stack(broker_url, bootstrap_servers, tmp, extra_env=dict(RETRY_ENV))
    deployment = Deployment(stack, providers)
    try:
        yield deployment
    finally:
        stack.stop()
        providers.reset_faults()
    leaks = secrets_in_logs(tmp, stack.env)
    assert not leaks, f"secrets in the logs: {leaks}"


SECRET_SETTINGS = ("SECRET", "TOKEN", "PASSWORD", "API_KEY", "PRIVATE")


def secrets_in_logs(tmp: Path, env: dict[str, str]) -> list[str]:
    """Every log a case's processes wrote, searched for the secret settings' values and credentials."""
    secrets = {v for k, v in env.items() if k.startswith("HERALD_") and any(w in k for w in SECRET_SETTINGS)}
    secrets |= {"Authorization: Basic", "Authorization: Bearer", "BEGIN PRIVATE KEY", "fake-access-"}
    found = []
    for log in tmp.glob("*.log"):
        text = log.read_text(errors="replace")
        found += [f"{log.name}: {secret[:12]}…" for secret in secrets if secret and secret in text]
    return found


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Any:
    """`report(figures)`: keep a case's figures for the run's JSON file and summary (tests/conftest.py
    gathers them from the test reports, so they arrive from pytest-xdist's workers too)."""

    def keep(figures: Figures) -> None:
        plain = json.loads(json.dumps(asdict(figures), default=str))
        request.node.user_properties.append((RELIABILITY_FIGURES, plain))
        print(f"\n{figures.case}: {json.dumps(plain)}")

    return keep
