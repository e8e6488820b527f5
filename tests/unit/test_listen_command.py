"""`herald listen` as a user runs it, against a gateway on loopback: the token comes from the environment or a
file, never from the command line, where every user of the machine can read it (`ps`, /proc/PID/cmdline)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from adapters.broker.embedded import free_port
from gateway.app import build_server, create_app
from gateway.auth import issue_token
from kernel.settings import Settings
from tests.unit.test_gateway_sockets import INTERNAL_SECRET, SECRET, FakeFeed, RecordingWriter, owner_endpoint

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0  # the command's start-up imports Faust


@pytest.fixture
async def gateway() -> AsyncIterator[str]:
    """A gateway on loopback with a fake feed and a fake owner (no broker, no worker); its WebSocket URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with owner_endpoint() as owner:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            jwt_secret=SECRET,  # type: ignore[arg-type]
            internal_secret=INTERNAL_SECRET,  # type: ignore[arg-type]
            gateway_worker_url=owner.url,
            gateway_port=port,
        )
        app = create_app(settings, registry=CollectorRegistry(), feed=FakeFeed(), writer=RecordingWriter())
        server = build_server(app, settings)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        async with asyncio.timeout(5):
            while not server.started:
                await asyncio.sleep(0.01)
        yield f"ws://127.0.0.1:{port}/ws"
        server.should_exit = True
        await asyncio.wait_for(task, 5)


async def _listen(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams",
        "listen",
        *args,
        cwd=ROOT,
        env={**clean, "HERALD_JWT_SECRET": SECRET, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.fixture
async def stop() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _welcome(process: asyncio.subprocess.Process) -> dict[str, object]:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
    assert line, (await process.stderr.read()).decode() if process.stderr else "no output"
    frame: dict[str, object] = json.loads(line)
    return frame


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


async def test_the_token_is_taken_from_the_environment(
    gateway: str, stop: list[asyncio.subprocess.Process]
) -> None:
    token = issue_token(SECRET, "alice", 60)
    process = await _listen("--url", gateway, env={"HERALD_LISTEN_TOKEN": token})
    stop.append(process)
    welcome = await _welcome(process)
    assert (welcome["type"], welcome["user_id"]) == ("welcome", "alice")
    assert token not in _cmdline(process.pid)


async def test_the_token_is_taken_from_a_file(
    gateway: str, stop: list[asyncio.subprocess.Process], tmp_path: Path
) -> None:
    token = issue_token(SECRET, "alice", 60)
    token_file = tmp_path / "alice.jwt"
    token_file.write_text(token + "\n")
    process = await _listen("--token-file", str(token_file), "--url", gateway, env={})
    stop.append(process)
    assert (await _welcome(process))["user_id"] == "alice"
    assert token not in _cmdline(process.pid)


async def test_a_token_on_the_command_line_is_refused_and_says_what_to_do() -> None:
    token = issue_token(SECRET, "alice", 60)
    closed = f"ws://127.0.0.1:{free_port()}/ws"
    process = await _listen("--token", token, "--url", closed, env={})
    _, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 2, err.decode()
    assert "HERALD_LISTEN_TOKEN" in err.decode() and "--token-file" in err.decode()
    assert token not in err.decode()


async def test_no_token_at_all_says_where_to_put_one() -> None:
    process = await _listen("--url", f"ws://127.0.0.1:{free_port()}/ws", env={})
    _, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 2 and "HERALD_LISTEN_TOKEN" in err.decode(), err.decode()
