"""`herald dev` as a newcomer runs it: ready, an example event arrives by WebSocket and email, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from adapters.broker.embedded import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def herald(*args: str, env: dict[str, str], **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "streams", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.fixture
def dev_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(
        {
            "HERALD_EMBEDDED_BROKER_PORT": str(free_port()),
            "HERALD_WORKER_PORT": str(free_port()),
            "HERALD_GATEWAY_PORT": str(free_port()),
            "HERALD_DATA_DIR": str(tmp_path / "data"),
            "HERALD_PARTITIONS": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def read_until(
    process: subprocess.Popen[str], pattern: str, timeout: float, seen: list[str]
) -> re.Match[str]:
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            seen.append(line)
            found = re.search(pattern, "".join(seen))
            if found:
                return found
        elif process.poll() is not None:
            break
        else:
            time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not seen; output:\n{''.join(seen)}")


def pids_of(fragment: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().split()[2]
            except OSError:
                continue
            if fragment in cmdline and state != "Z":
                found.add(int(entry.name))
    return found


def children_of(data_dir: str) -> set[int]:
    """Worker and gateway processes started with this data directory in their environment."""
    marker = f"HERALD_DATA_DIR={data_dir}".encode()
    found = set()
    for pid in pids_of("-m streams"):
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.add(pid)
        except OSError:
            continue
    return found


@pytest.fixture
def dev(dev_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    process = herald("dev", env=dev_env)
    seen: list[str] = []
    yield process, seen
    if process.poll() is None:
        process.kill()
        process.wait()


def test_dev_serves_the_example_event_then_stops_cleanly(
    dev: tuple[subprocess.Popen[str], list[str]], dev_env: dict[str, str]
) -> None:
    process, seen = dev
    read_until(process, r"Herald is ready", 60, seen)
    # The token is in a file only its owner can read, not on a command line (visible to every user by ps).
    listen = read_until(process, r"listen as alice:\s+herald listen --token-file (\S+)", 5, seen)
    token_file = Path(listen.group(1))
    assert token_file.stat().st_mode & 0o077 == 0, oct(token_file.stat().st_mode)
    token = token_file.read_text().strip()
    assert token not in "".join(seen)

    async def receive_one() -> dict[str, object]:
        url = f"ws://127.0.0.1:{dev_env['HERALD_GATEWAY_PORT']}/ws"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            assert json.loads(await ws.recv())["type"] == "welcome"
            published = subprocess.run(
                [sys.executable, "-m", "streams", "publish", "examples/event.json"],
                cwd=ROOT,
                env=dev_env,
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert published.returncode == 0, published.stdout + published.stderr
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if frame["type"] == "notification":
                    return frame["notification"]  # type: ignore[no-any-return]

    notification = asyncio.run(receive_one())
    assert notification["title"] == "Your order A-1001 has shipped"
    read_until(process, r"email to alice@example.com: Your order A-1001 has shipped", 30, seen)

    broker_port = dev_env["HERALD_EMBEDDED_BROKER_PORT"]
    assert pids_of(f"tcp://127.0.0.1:{broker_port}"), "the embedded broker should be running"
    assert len(children_of(dev_env["HERALD_DATA_DIR"]) - {process.pid}) == 2, (
        "the worker and gateway should run"
    )
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while pids_of(f"tcp://127.0.0.1:{broker_port}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pids_of(f"tcp://127.0.0.1:{broker_port}"), "the broker outlived herald dev"
    assert not children_of(dev_env["HERALD_DATA_DIR"]), "a worker or gateway outlived herald dev"
    assert not token_file.exists(), "the tokens outlived herald dev"


def test_port_in_use_is_a_clear_error(dev_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(dev_env["HERALD_GATEWAY_PORT"])))
        taken.listen()
        process = herald("dev", env=dev_env)
        output, _ = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "HERALD_GATEWAY_PORT" in output and "in use" in output
