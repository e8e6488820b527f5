"""Prometheus's own tools for the tests: promtool and the server, from Debian's `prometheus` package, which
scripts/test installs. A missing tool fails the test that needs it: it is never skipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL_HINT = "install Debian's prometheus package (scripts/test does: apt-get install prometheus)"


def tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} not found: {INSTALL_HINT}")
    return path


def promtool(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run promtool; the result carries its output for assertion messages."""
    return subprocess.run(
        [tool("promtool"), *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=60
    )


def exposition_problems(text: str) -> str:
    """`promtool check metrics` on an exposition: its complaints, or "" when it has none."""
    result = promtool("check", "metrics", stdin=text)
    problems = (result.stdout + result.stderr).strip()
    return problems if result.returncode != 0 or problems else ""
