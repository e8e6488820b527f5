"""A bench module of ours run in a process of its own and driven a command line at a time: each command is one
line on its stdin, each answer one line on its stdout (the WebSocket clients, whose CPU must not be the
harness's)."""

from __future__ import annotations

import subprocess
import sys
from typing import IO

from bench.deployment import ROOT
from bench.ws_stack_servers import more_open_files


class LineProcess:
    def __init__(self, module: str, args: list[str], log: IO[bytes]) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            preexec_fn=more_open_files,
        )

    def ask_now(self, line: str) -> list[str]:
        """Send one command and wait for its answer, split in words."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the clients exited on {line!r}")
        return answer.split()
