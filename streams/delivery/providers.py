"""The providers Herald knows (channel → name → builder) and the set built from the settings: each channel's
providers whose settings are present, in the configured failover order, and how to close them all. Each
provider bounds its own requests in flight (its HERALD_<PROVIDER>_MAX_CONCURRENCY) and owns what it sends
through: connections, and threads for a synchronous SDK."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
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
Builder = Callable[[Settings], P | None]


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
    """The providers built, per channel in failover order."""

    email: list[EmailSender] = field(default_factory=list)
    sms: list[SmsSender] = field(default_factory=list)
    push: list[PushSender] = field(default_factory=list)
    _closed: bool = field(default=False, init=False, repr=False)

    async def aclose(self) -> None:
        """Close every provider (its connections and threads). One that fails to close is logged and the
        others are closed all the same; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        everyone: list[EmailSender | SmsSender | PushSender] = [*self.email, *self.sms, *self.push]
        results = await asyncio.gather(*(p.aclose() for p in everyone), return_exceptions=True)
        for provider, result in zip(everyone, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("provider %s did not close cleanly: %r", provider.name, result)


def build_providers(settings: Settings, registry: Registry = REGISTRY) -> Providers:
    """Every configured provider; a ConfigurationError names the setting at fault."""
    return Providers(
        email=_build("email", registry.email, settings),
        sms=_build("sms", registry.sms, settings),
        push=_build("push", registry.push, settings),
    )


def _build(channel: str, builders: Mapping[str, Builder[P]], settings: Settings) -> list[P]:
    built: list[P] = []
    for name in settings.provider_order(channel):
        if name not in builders:
            # `Settings` refuses unknown names already; this guards a registry that fell behind it.
            raise ConfigurationError(
                f"HERALD_{channel.upper()}_PROVIDERS: no provider named {name} is registered"
            )
        provider = builders[name](settings)
        if provider is not None:
            built.append(provider)
    return built
