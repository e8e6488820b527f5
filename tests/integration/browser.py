"""Headless Chromium driven over the DevTools protocol, for the tests of the gateway's demo page: one page,
and JavaScript evaluated in it (the `browser` fixture in conftest.py starts one per test)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

CHROMIUM = "chromium"
TIMEOUT = 20.0


class Browser:
    """One page of headless Chromium, and JavaScript evaluated in it."""

    def __init__(self, process: subprocess.Popen[bytes], page: ClientConnection) -> None:
        self._process = process
        self._page = page
        self._ids = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._ids += 1
        await self._page.send(json.dumps({"id": self._ids, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self._page.recv(), TIMEOUT))
            if message.get("id") == self._ids:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    async def eval(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, expected: Any, timeout: float = TIMEOUT) -> None:
        value = None
        for _ in range(int(timeout / 0.05)):
            value = await self.eval(expression)
            if value == expected:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{expression} is {value!r}, not {expected!r}")

    async def open(self, url: str) -> None:
        await self.call("Page.enable")
        await self.call("Page.navigate", url=url)
        await self.wait_for("document.readyState", "complete")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = shutil.which(CHROMIUM)
    if executable is None:
        pytest.fail("Chromium is required for the demo-page tests: apt-get install -y chromium")
    # Chromium's helper processes (renderers, crashpad) may still write to the profile for a moment after
    # the browser exits: they are stopped as a group, and what they leave behind is not an error.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-extensions",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            async with asyncio.timeout(30):
                while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
                    await asyncio.sleep(0.02)
            port = int(port_file.read_text().splitlines()[0])
            async with httpx.AsyncClient() as http:
                targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
            page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with connect(page_url, max_size=None) as page:
                yield Browser(process, page)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
