"""The provider registry and the built set: failover order from the settings, only configured providers, bad
settings refused at start-up, and `Providers.aclose` closing every provider and the shared pool."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from adapters.push import PushResult, PushToken
from kernel.errors import ConfigurationError
from kernel.settings import Settings, load_settings
from schemas.notifications import PushNotification
from schemas.users import TokenKind
from streams.delivery.providers import REGISTRY, Providers, Registry, build_providers


class FakeSender:
    """An EmailSender / SmsSender that records being closed (and, like FCM, closes through the pool)."""

    def __init__(self, name: str, closed: list[str], *, pool: ThreadPoolExecutor | None = None) -> None:
        self.name = name
        self._closed = closed
        self._pool = pool
        self.pool_usable_at_close: bool | None = None

    async def send(self, message: object) -> str | None:
        return f"{self.name}-id"

    async def aclose(self) -> None:
        if self._pool is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, lambda: None)
            self.pool_usable_at_close = True
        self._closed.append(self.name)


class FakePushSender:
    """A PushSender that records being closed, or fails to close when told."""

    kinds = frozenset({TokenKind.FCM_TOKEN})

    def __init__(self, name: str, closed: list[str], *, fails: bool = False) -> None:
        self.name = name
        self._closed = closed
        self._fails = fails

    async def send(self, message: PushNotification, tokens: Sequence[PushToken]) -> PushResult:
        return PushResult(())

    async def aclose(self) -> None:
        self._closed.append(self.name)
        if self._fails:
            raise RuntimeError("the SDK would not let go")


def pool_is_shut(pool: ThreadPoolExecutor) -> bool:
    try:
        pool.submit(lambda: None).result()
    except RuntimeError:  # "cannot schedule new futures after shutdown"
        return True
    return False


async def test_aclose_closes_every_provider_then_the_pool() -> None:
    closed: list[str] = []
    pool = ThreadPoolExecutor(max_workers=2)
    through_pool = FakeSender("e2", closed, pool=pool)
    providers = Providers(
        email=[FakeSender("e1", closed), through_pool],
        sms=[FakeSender("s1", closed)],
        push=[FakePushSender("p1", closed)],
        threads=pool,
    )
    await providers.aclose()
    assert sorted(closed) == ["e1", "e2", "p1", "s1"]
    assert through_pool.pool_usable_at_close is True  # the pool outlived the providers' closing
    assert pool_is_shut(pool)


async def test_a_provider_failing_to_close_does_not_keep_the_others_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []
    pool = ThreadPoolExecutor(max_workers=1)
    providers = Providers(
        email=[FakeSender("e1", closed)],
        push=[FakePushSender("p1", closed, fails=True), FakePushSender("p2", closed)],
        threads=pool,
    )
    await providers.aclose()
    assert sorted(closed) == ["e1", "p1", "p2"]
    assert pool_is_shut(pool)
    assert "provider p1 did not close cleanly" in caplog.text


async def test_aclose_twice_closes_once() -> None:
    closed: list[str] = []
    providers = Providers(sms=[FakeSender("s1", closed)], threads=ThreadPoolExecutor(max_workers=1))
    await providers.aclose()
    await providers.aclose()
    assert closed == ["s1"]


def test_builders_run_in_the_configured_order_and_absent_ones_take_no_part() -> None:
    closed: list[str] = []
    asked: list[tuple[str, ThreadPoolExecutor]] = []

    def builder(name: str, configured: bool) -> Callable[[Settings, ThreadPoolExecutor], FakeSender | None]:
        def build(settings: Settings, threads: ThreadPoolExecutor) -> FakeSender | None:
            asked.append((name, threads))
            return FakeSender(name, closed) if configured else None

        return build

    registry = Registry(
        email={"sendgrid": builder("sendgrid", True), "smtp": builder("smtp", True)},
        sms={"twilio": builder("twilio", False), "sns": builder("sns", True)},
        push={},
    )
    settings = load_settings(email_providers="smtp,sendgrid", push_providers="")
    providers = build_providers(settings, registry)
    assert [p.name for p in providers.email] == ["smtp", "sendgrid"]
    assert [p.name for p in providers.sms] == ["sns"]
    assert providers.push == []
    assert [name for name, _ in asked] == ["smtp", "sendgrid", "twilio", "sns"]
    assert {id(threads) for _, threads in asked} == {id(providers.threads)}  # one pool, shared by all
    asyncio.run(providers.aclose())
    assert sorted(closed) == ["sendgrid", "smtp", "sns"]


def test_a_registry_missing_a_configured_name_fails_naming_the_setting() -> None:
    settings = load_settings()
    with pytest.raises(ConfigurationError, match="HERALD_EMAIL_PROVIDERS: no provider named sendgrid"):
        build_providers(settings, Registry(email={}, sms={}, push={}))


@pytest.mark.parametrize("channel", ["email", "sms", "push"])
def test_the_registry_has_exactly_the_providers_the_settings_accept(
    monkeypatch: pytest.MonkeyPatch, channel: str
) -> None:
    # kernel/ cannot import the registry (kernel imports nothing of streams/), so the list is kept twice.
    monkeypatch.setenv(f"HERALD_{channel.upper()}_PROVIDERS", "nonesuch")
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    known = re.search(r"known: ([a-z0-9_, ]+)", str(refused.value))
    assert known is not None
    assert sorted(known.group(1).split(", ")) == sorted(getattr(REGISTRY, channel))


async def test_real_providers_are_built_from_their_settings_in_order() -> None:
    settings = load_settings(
        email_providers="smtp,sendgrid",
        smtp_host="127.0.0.1",
        sendgrid_api_key="SG.test-key",
        sms_providers="twilio,sns",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
        twilio_from="+15005550006",
        sns_region="eu-west-1",
        sns_access_key_id="AKIDEXAMPLE",
        sns_secret_access_key="secret",
    )
    providers = build_providers(settings)
    try:
        assert [p.name for p in providers.email] == ["smtp", "sendgrid"]
        assert [p.name for p in providers.sms] == ["twilio", "sns"]
        assert providers.push == []  # neither FCM nor APNs is configured
    finally:
        await providers.aclose()
    assert providers.threads is not None and pool_is_shut(providers.threads)


def test_an_unusable_fcm_key_fails_at_start_up_naming_the_setting(tmp_path: Path) -> None:
    key_file = tmp_path / "fcm.json"
    key_file.write_text("not json", encoding="utf-8")
    settings = load_settings(fcm_service_account_file=key_file)
    with pytest.raises(ConfigurationError, match="HERALD_FCM_SERVICE_ACCOUNT_FILE: not a usable"):
        build_providers(settings)


def test_an_unusable_apns_key_fails_at_start_up_naming_the_setting(tmp_path: Path) -> None:
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_text("not a key", encoding="utf-8")
    settings = load_settings(
        apns_key_file=key_file,
        apns_key_id="ABCDEFGHIJ",
        apns_team_id="KLMNOPQRST",
        apns_topic="com.example.app",
    )
    with pytest.raises(ConfigurationError, match="HERALD_APNS_KEY_FILE / HERALD_APNS_CA_FILE: not usable"):
        build_providers(settings)
