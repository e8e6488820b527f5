"""`herald dev`: the embedded broker, a worker, the gateway and a local SMTP mailbox, supervised as one."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from types import FrameType

import httpx

from adapters.broker.embedded import EmbeddedBroker, die_with_parent
from adapters.email.sink import SmtpSink
from gateway.auth import issue_token
from kernel.control_chars import strip_controls
from kernel.errors import BrokerError, ConfigurationError, InvalidInput
from kernel.ports import ensure_port_free
from kernel.settings import Settings
from kernel.topics import TopicNames
from streams.cli.publishing import parse_profiles, produce, profile_records
from streams.runtime.provisioning import provision_topics

READY_TIMEOUT_SECONDS = 60.0


def _say(text: str) -> None:
    print(text, flush=True)


def _show_email(message: EmailMessage) -> None:
    # Whatever reaches the sink is printed to a terminal: no escape sequences or bidi overrides get there.
    body = message.get_body(preferencelist=("plain",))
    text = strip_controls(body.get_content(), keep="\n\t").strip() if body is not None else ""
    to, subject = (strip_controls(str(message[name] or "")) for name in ("To", "Subject"))
    _say(f"\n📧 email to {to}: {subject}\n" + "\n".join(f"   {line}" for line in text.splitlines()))


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(  # noqa: S603 — our own interpreter and module
            [sys.executable, "-m", "streams", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
            preexec_fn=die_with_parent(),
        )


def _stop(processes: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _wait_ready(urls: dict[str, str], processes: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    pending = dict(urls)
    async with httpx.AsyncClient() as client:
        while pending:
            for name, url in list(pending.items()):
                if processes[name].poll() is not None:
                    raise RuntimeError(f"the {name} exited with code {processes[name].returncode}")
                try:
                    if (await client.get(url, timeout=1.0)).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {READY_TIMEOUT_SECONDS:g} s: {', '.join(pending)}")
            await asyncio.sleep(0.2)


def run_dev(settings: Settings, *, users_file: Path) -> int:
    started = time.monotonic()
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tokens = settings.data_dir / "tokens"  # removed on exit: the secret may outlive the run
    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    # Checked up front so a taken port is one clear line, not a child process dying later.
    ensure_port_free(settings.worker_host, settings.worker_port, "HERALD_WORKER_PORT")
    ensure_port_free(settings.gateway_host, settings.gateway_port, "HERALD_GATEWAY_PORT")
    env = {**os.environ}
    broker: EmbeddedBroker | None = None
    sink: SmtpSink | None = None
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        if settings.broker is None:
            broker = EmbeddedBroker(
                settings.embedded_broker_host, settings.embedded_broker_port, log_path=logs / "broker.log"
            )
            try:
                broker.start()
                broker.wait_ready()
            except BrokerError as exc:
                raise ConfigurationError(str(exc)) from None
        if settings.smtp_host is None:
            sink = SmtpSink("127.0.0.1", 0, on_message=_show_email)
            sink.start()
            host, port = sink.address
            env.update({"HERALD_SMTP_HOST": host, "HERALD_SMTP_PORT": str(port), "HERALD_SMTP_TLS": "none"})
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else secrets.token_urlsafe(32)
        env["HERALD_JWT_SECRET"] = secret
        if settings.internal_secret is None:
            env["HERALD_INTERNAL_SECRET"] = secrets.token_urlsafe(32)
        env["HERALD_GATEWAY_WORKER_URL"] = f"http://{settings.worker_host}:{settings.worker_port}"

        asyncio.run(provision_topics(settings))
        user_ids = _load_users(settings, users_file)

        children["worker"] = _spawn(["worker", "-l", "info"], env, logs / "worker.log")
        children["gateway"] = _spawn(["gateway"], env, logs / "gateway.log")
        worker_url = f"http://{settings.worker_host}:{settings.worker_port}"
        gateway_url = f"{settings.gateway_host}:{settings.gateway_port}"
        asyncio.run(
            _wait_ready(
                {"worker": f"{worker_url}/readyz", "gateway": f"http://{gateway_url}/readyz"}, children
            )
        )
        _say(f"\nHerald is ready ({time.monotonic() - started:.1f} s)")
        _say(f"  broker       {settings.broker_url}" + (" (embedded, in memory)" if broker else ""))
        _say(f"  websocket    ws://{gateway_url}/ws?token=<token>")
        _say(f"  metrics      {worker_url}/metrics (worker), http://{gateway_url}/metrics (gateway)")
        if sink is not None:
            _say(f"  smtp         {sink.address[0]}:{sink.address[1]} (emails are printed here)")
        _say(f"  logs         {logs}/")
        for user_id, path in _write_tokens(tokens, secret, settings.jwt_algorithm, user_ids[:3]):
            _say(f"  listen as {user_id}:  herald listen --token-file {path}")
        _say("  publish:     herald publish examples/event.json\nCtrl-C stops everything.")

        while not stop_requested:
            for name, process in children.items():
                if process.poll() is not None:
                    _say(
                        f"herald dev: the {name} exited with code {process.returncode}; see {logs}/{name}.log"
                    )
                    return 1
            time.sleep(0.2)
        _say("\nstopping …")
        return 0
    except RuntimeError as exc:
        _say(f"herald dev: {exc}; see {logs}/")
        return 1
    finally:
        _stop(list(children.values()))
        shutil.rmtree(tokens, ignore_errors=True)
        if sink is not None:
            sink.stop()
        if broker is not None:
            broker.stop()


def _write_tokens(
    directory: Path, secret: str, algorithm: str, user_ids: list[str]
) -> list[tuple[str, Path]]:
    """A day's token per user, each in a file only its owner may read: printed as `--token-file PATH` rather
    than as `--token T`, it stays off command lines, which every user of the machine can read (ps)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for user_id in user_ids:
        path = directory / f"{re.sub(r'[^A-Za-z0-9_@-]', '_', user_id)[:64]}.jwt"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(issue_token(secret, user_id, 24 * 3600, algorithm=algorithm) + "\n")
        written.append((user_id, path))
    return written


def _load_users(settings: Settings, users_file: Path) -> list[str]:
    if not users_file.is_file():
        return []
    try:
        profiles = parse_profiles(users_file.read_text(encoding="utf-8"))
    except InvalidInput as exc:
        raise ConfigurationError(f"--users {users_file}: {exc}") from None
    users_topic = TopicNames.from_settings(settings).users
    asyncio.run(produce(settings.bootstrap_servers, users_topic, profile_records(profiles)))
    return [profile.user_id for profile in profiles]
