"""The architecture as contracts: import-linter's layers and forbidden contracts (pyproject.toml) hold, and a
contract that is broken is reported (so the check itself can fail)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(executable), "--no-cache", *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_the_import_contracts_hold() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_forbidden_import_breaks_a_contract(tmp_path: Path) -> None:
    # A copy of the tree where an adapter imports the stream processor: the layers contract must say so.
    for name in ("schemas", "kernel", "adapters", "gateway", "streams"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    culprit = tmp_path / "adapters" / "email" / "sendgrid.py"
    culprit.write_text("import streams.effects\n" + culprit.read_text())
    result = lint_imports(cwd=tmp_path)
    assert result.returncode != 0
    assert "adapters.email.sendgrid -> streams.effects" in result.stdout
