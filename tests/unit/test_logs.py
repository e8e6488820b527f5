"""kernel/logs.py: JSON lines off a terminal, readable lines on one, secrets redacted, Faust's lines too."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import unquote

import pytest
from pydantic import SecretStr

from kernel.logs import REDACTED, Redactor, build_handler, secrets_of
from kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "jwt-secret-" + "s" * 32


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _log_through(stream: io.StringIO, *args: object, **kwargs: object) -> str:
    logger = logging.getLogger("tests.logs")
    logger.propagate = False
    handler = build_handler([SECRET], stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info(*args, **kwargs)  # type: ignore[arg-type]
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_off_a_terminal_each_record_is_one_json_object_with_its_extra_fields() -> None:
    out = _log_through(
        io.StringIO(),
        "delivered %s",
        "ntf_1",
        extra={"notification_id": "ntf_1", "event_id": "evt-1", "channel": "email"},
    )
    (line,) = out.splitlines()
    entry = json.loads(line)
    assert entry["message"] == "delivered ntf_1"
    assert (entry["level"], entry["logger"]) == ("info", "tests.logs")
    assert entry["ts"].endswith("Z")
    assert {k: entry[k] for k in ("notification_id", "event_id", "channel")} == {
        "notification_id": "ntf_1",
        "event_id": "evt-1",
        "channel": "email",
    }


def test_on_a_terminal_records_are_readable_lines() -> None:
    out = _log_through(_Tty(), "delivered", extra={"channel": "email"})
    assert not out.startswith("{")
    assert "INFO" in out and "tests.logs: delivered channel=email" in out


def test_exceptions_are_one_json_line_with_the_traceback() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.logs.exc")
    logger.propagate = False
    handler = build_handler([SECRET], stream)
    logger.addHandler(handler)
    try:
        raise ValueError(f"bad key {SECRET}")
    except ValueError:
        logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert "ValueError" in entry["exc"] and SECRET not in entry["exc"]


def test_secrets_tokens_and_authorization_headers_are_redacted_everywhere() -> None:
    out = _log_through(
        io.StringIO(),
        "key %s, GET /ws?token=eyJhbGciOi.abc.def&x=1, headers {'Authorization': 'Bearer abc123'}",
        SECRET,
        extra={"url": f"https://api.example.com/?access_token=zzz&secret={SECRET}"},
    )
    entry = json.loads(out)
    assert SECRET not in out and "eyJhbGciOi" not in out and "abc123" not in out and "zzz" not in out
    assert f"key {REDACTED}" in entry["message"]
    assert f"token={REDACTED}&x=1" in entry["message"]
    assert REDACTED in entry["url"]


# A real HS256 token's shape: base64url JSON header and payload (so each starts "eyJ"), then a signature.
_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTc5NjAxNjUyMH0"
    ".RN7gvTDqC9Z2OtbE3SnxroCFdbE5ukRKBgufCW48X5U"
)
_ENCODED = "".join(f"%{ord(c):02X}" for c in _JWT)


@pytest.mark.parametrize(
    "text",
    [
        f"GET /ws?%74oken={_JWT} HTTP/1.1",
        f"GET /ws?tok%65n={_JWT}",
        f"GET /ws?token%3D{_JWT}",
        f"GET /ws?%2574oken={_JWT}",
        f"GET /ws?token={_ENCODED}",
        f"GET /ws?x=1&auth={_JWT}",
        f"refresh failed for {_JWT}: expired",
        f"header was 'Bearer%20{_JWT}'",
        f'{{"token": "{_JWT}"}}',
        _JWT.replace(".", "%2E", 1),
    ],
    ids=["name-1", "name-2", "equals", "twice", "value", "other-name", "bare", "bearer", "json", "dot"],
)
def test_a_token_is_redacted_in_any_encoding(text: str) -> None:
    out = _log_through(io.StringIO(), "seen %s", text, extra={"url": text})
    signature = _JWT.rsplit(".", 1)[1]
    assert signature not in out and signature not in unquote(unquote(out)), out
    assert REDACTED in json.loads(out)["message"] and REDACTED in json.loads(out)["url"]


def test_redactor_leaves_ordinary_text_and_short_values_alone() -> None:
    redact = Redactor(["abc", "a-long-api-key"])
    assert redact("the abc of it, key a-long-api-key") == f"the abc of it, key {REDACTED}"
    assert redact("Authorization: Basic dXNlcjpwYXNz") == f"Authorization: Basic {REDACTED}"


def test_every_secret_setting_is_collected() -> None:
    settings = Settings(
        jwt_secret=SecretStr(SECRET),
        smtp_username="herald",
        smtp_password=SecretStr("smtp-password"),
        sendgrid_api_key=SecretStr("SG.key-value"),
    )
    assert set(secrets_of(settings)) >= {SECRET, "smtp-password", "SG.key-value"}


def test_the_faust_worker_logs_json_and_honours_its_level() -> None:
    # A separate process: the worker's logging set-up replaces the root logger's handlers.
    script = textwrap.dedent(
        f"""
        import logging
        import faust
        from pydantic import SecretStr
        from kernel.logs import worker_logging_config
        from kernel.settings import Settings

        settings = Settings(jwt_secret=SecretStr({SECRET!r}))
        app = faust.App("probe", logging_config=worker_logging_config(settings))
        faust.Worker(app, loglevel="info", quiet=True)._setup_logging()
        logging.getLogger("faust.worker").info("Faust says %s", "hi")
        logging.getLogger("herald.worker").info("delivered", extra={{"notification_id": "n1"}})
        logging.getLogger("herald.worker").warning("secret is %s", {SECRET!r})
        logging.getLogger("herald.worker").debug("below the level")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(e["logger"], e["message"]) for e in entries] == [
        ("faust.worker", "Faust says hi"),
        ("herald.worker", "delivered"),
        ("herald.worker", f"secret is {REDACTED}"),
    ]
    assert entries[1]["notification_id"] == "n1"


def test_the_gateway_config_routes_uvicorn_through_the_same_handler() -> None:
    script = textwrap.dedent(
        """
        import logging
        import uvicorn
        from kernel.logs import gateway_logging_config
        from kernel.settings import Settings

        uvicorn.Config(lambda *a: None, log_config=gateway_logging_config(Settings()))
        logging.getLogger("uvicorn.error").info('"GET /ws?token=abc.def HTTP/1.1" 101')
        logging.getLogger("gateway.app").error("feed stopped")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(e["logger"], e["level"]) for e in entries] == [
        ("uvicorn.error", "info"),
        ("gateway.app", "error"),
    ]
    assert "abc.def" not in result.stderr
