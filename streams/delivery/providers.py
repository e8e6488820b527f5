"""The providers Herald knows (channel → name → builder) and the set built from the settings: each channel's
providers whose settings are present, in the configured failover order, and how to close them all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from adapters.email import EmailSender
from adapters.email.sendgrid import SendGridEmailSender
from adapters.email.smtp import SmtpEmailSender
from adapters.push import PushSender
from adapters.push.apns import ApnsPushSender
from adapters.push.fcm import FcmPushSender
from adapters.sms import SmsSender
from adapters.sms.sns import SnsSmsSender
from adapters.sms.twilio import TwilioSmsSender
from kernel.errors import ConfigurationError
from kernel.settings import Settings

log = logging.getLogger("herald.providers")

P = TypeVar("P")

# An adapter's `from_settings`: the provider, or None when its settings are absent (it then takes no part).
# Settings that are present but unusable raise ConfigurationError naming the HERALD_* variable.
Builder = Callable[[Settings, ThreadPoolExecutor], P | None]


@dataclass(frozen=True)
class Registry:
    """Channel → provider name (as written in HERALD_<CHANNEL>_PROVIDERS) → builder."""

    email: Mapping[str, Builder[EmailSender]]
    sms: Mapping[str, Builder[SmsSender]]
    push: Mapping[str, Builder[PushSender]]


# A new provider is one adapter module and one line here (and its name in `Settings._known_providers`).
REGISTRY = Registry(
    email={"sendgrid": SendGridEmailSender.from_settings, "smtp": SmtpEmailSender.from_settings},
    sms={"twilio": TwilioSmsSender.from_settings, "sns": SnsSmsSender.from_settings},
    push={"fcm": FcmPushSender.from_settings, "apns": ApnsPushSender.from_settings},
)


@dataclass
class Providers:
    """The providers built, per channel in failover order, and the pool their synchronous SDKs share."""

    email: list[EmailSender] = field(default_factory=list)
    sms: list[SmsSender] = field(default_factory=list)
    push: list[PushSender] = field(default_factory=list)
    threads: ThreadPoolExecutor | None = None
    _closed: bool = field(default=False, init=False, repr=False)

    async def aclose(self) -> None:
        """Close every provider, then the shared pool (a provider may close through it). One that fails to
        close is logged and the others are closed all the same; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        everyone: list[EmailSender | SmsSender | PushSender] = [*self.email, *self.sms, *self.push]
        try:
            results = await asyncio.gather(*(p.aclose() for p in everyone), return_exceptions=True)
        finally:
            if self.threads is not None:
                # After the providers: FCM closes through the pool. Calls still queued are cancelled; one
                # already running ends on its own timeout.
                self.threads.shutdown(wait=False, cancel_futures=True)
        for provider, result in zip(everyone, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("provider %s did not close cleanly: %r", provider.name, result)


def build_providers(settings: Settings, registry: Registry = REGISTRY) -> Providers:
    # One pool for every synchronous SDK: its size bounds the provider calls in flight at once.
    threads = ThreadPoolExecutor(max_workers=settings.provider_threads, thread_name_prefix="herald-provider")
    try:
        return Providers(
            email=_build("email", registry.email, settings, threads),
            sms=_build("sms", registry.sms, settings, threads),
            push=_build("push", registry.push, settings, threads),
            threads=threads,
        )
    except BaseException:
        threads.shutdown(wait=False)
        raise


def _build(
    channel: str, builders: Mapping[str, Builder[P]], settings: Settings, threads: ThreadPoolExecutor
) -> list[P]:
    built: list[P] = []
    for name in settings.provider_order(channel):
        if name not in builders:
            # `Settings` refuses unknown names already; this guards a registry that fell behind it.
            raise ConfigurationError(
                f"HERALD_{channel.upper()}_PROVIDERS: no provider named {name} is registered"
            )
        provider = builders[name](settings, threads)
        if provider is not None:
            built.append(provider)
    return built
