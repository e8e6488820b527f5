from __future__ import annotations

import pytest

from kernel.errors import ConfigurationError
from kernel.settings import load_settings


def test_defaults_use_embedded_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HERALD_BROKER", raising=False)
    settings = load_settings()
    assert settings.broker_url == "kafka://127.0.0.1:19092"
    assert settings.bootstrap_servers == ["127.0.0.1:19092"]


def test_external_broker_with_several_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_BROKER", "kafka://k1:9092,k2:9092")
    assert load_settings().bootstrap_servers == ["k1:9092", "k2:9092"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HERALD_BROKER", "localhost:9092"),
        ("HERALD_SMTP_PORT", "70000"),
        ("HERALD_SMTP_TLS", "sometimes"),
        ("HERALD_PARTITIONS", "0"),
        ("HERALD_JWT_ALGORITHM", "none"),
        ("HERALD_SMTP_LOCAL_HOSTNAME", "mx.example\r\nRCPT TO:<x@y>"),  # nothing after the name in EHLO
        ("HERALD_SMTP_MESSAGES_PER_CONNECTION", "0"),
    ],
)
def test_bad_setting_names_itself(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        load_settings()


def test_smtp_credentials_must_come_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_SMTP_USERNAME", "u")
    with pytest.raises(ConfigurationError, match="HERALD_SMTP_PASSWORD"):
        load_settings()


def test_secrets_are_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_JWT_SECRET", "hunter2-very-secret")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert settings.jwt_secret is not None and settings.jwt_secret.get_secret_value() == "hunter2-very-secret"


def test_a_short_pseudonym_key_is_refused_without_being_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_PSEUDONYM_KEY", "guessable")
    with pytest.raises(ConfigurationError, match="HERALD_PSEUDONYM_KEY") as caught:
        load_settings()
    assert "guessable" not in str(caught.value)
    monkeypatch.setenv("HERALD_PSEUDONYM_KEY", "k" * 32)
    settings = load_settings()
    assert settings.pseudonym_key is not None and "k" * 32 not in repr(settings)
