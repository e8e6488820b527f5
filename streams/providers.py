"""Building each channel's providers from the settings, in failover order. A provider whose settings are
incomplete is refused here, at start-up, with the missing setting named."""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.email.smtp import SmtpEmailSender
from schemas.notifications import EmailNotification, PushNotification, SmsNotification
from streams.circuit import CircuitBreaker
from streams.failover import Provider, ProviderChain
from streams.settings import Settings


@dataclass
class Providers:
    email: list[Provider[EmailNotification]] = field(default_factory=list)
    sms: list[Provider[SmsNotification]] = field(default_factory=list)
    push: list[Provider[PushNotification]] = field(default_factory=list)

    def chains(
        self, settings: Settings
    ) -> tuple[
        ProviderChain[EmailNotification], ProviderChain[SmsNotification], ProviderChain[PushNotification]
    ]:
        def breaker() -> CircuitBreaker:
            return CircuitBreaker(settings.circuit_failure_threshold, settings.circuit_cooldown_seconds)

        return (
            ProviderChain(self.email, breaker_factory=breaker),
            ProviderChain(self.sms, breaker_factory=breaker),
            ProviderChain(self.push, breaker_factory=breaker),
        )


def build_providers(settings: Settings) -> Providers:
    providers = Providers()
    if settings.smtp_host is not None:
        providers.email.append(SmtpEmailSender.from_settings(settings))
    return providers
