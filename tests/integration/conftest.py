"""Fixtures for integration tests: a local SMTP server, isolated Herald stacks on the test broker, and
headless Chromium for the demo page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from adapters.email.sink import SmtpSink
from tests.integration.browser import Browser, chromium
from tests.integration.stack import Stack


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[SmtpSink]:
    sink = SmtpSink("127.0.0.1", 0)
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def stack_factory(
    broker_url: str, bootstrap_servers: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[type[Stack]]:
    stacks: list[Stack] = []

    def make(**extra_env: str) -> Stack:
        stack = Stack(
            broker_url, bootstrap_servers, Path(tmp_path_factory.mktemp("stack")), extra_env=extra_env
        )
        stacks.append(stack)
        return stack

    yield make  # type: ignore[misc]
    for stack in stacks:
        stack.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as started:
        yield started
