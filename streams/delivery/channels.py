"""Wiring each delivery channel to its agents: the providers in failover order, the retry policy, and what
to do when a provider refuses an address for good."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kernel.errors import PermanentDeliveryError
from schemas.channels import Channel
from schemas.notifications import EmailNotification, NotificationBase, PushNotification, SmsNotification
from streams.delivery.agents import ChannelDelivery, OnRefused
from streams.delivery.circuit import CircuitBreaker
from streams.delivery.failover import Attempt, ProviderChain, Sent
from streams.delivery.hygiene import forget_devices, forget_phone
from streams.delivery.providers import Providers
from streams.delivery.push import PushChannel
from streams.delivery.retry_policy import RetryPolicy
from streams.runtime.context import WorkerContext

log = logging.getLogger("herald.channels")

SendFn = Callable[[NotificationBase, Callable[[Attempt], Awaitable[None]]], Awaitable[Sent]]


def retry_policy(ctx: WorkerContext) -> RetryPolicy:
    s = ctx.settings
    return RetryPolicy(
        base_delay_seconds=s.retry_base_delay_seconds,
        multiplier=s.retry_multiplier,
        max_delay_seconds=s.retry_max_delay_seconds,
        jitter=s.retry_jitter,
        max_attempts=s.retry_max_attempts,
        tiers=s.retry_tiers,
    )


def _sender(chain: ProviderChain[Any]) -> SendFn:
    async def send(notification: NotificationBase, on_attempt: Callable[[Attempt], Awaitable[None]]) -> Sent:
        return await chain.send(notification, on_attempt)

    return send


def _sms_refused(ctx: WorkerContext) -> OnRefused:
    async def on_refused(notification: NotificationBase, error: PermanentDeliveryError) -> None:
        # A number that opted out (Twilio 21610) must not be texted again, whatever rule asks for it.
        if error.reason == "unsubscribed" and isinstance(notification, SmsNotification):
            await forget_phone(ctx, notification.recipient, notification.to)

    return on_refused


def register_channels(ctx: WorkerContext, providers: Providers) -> None:
    settings = ctx.settings

    def breaker() -> CircuitBreaker:
        return CircuitBreaker(settings.circuit_failure_threshold, settings.circuit_cooldown_seconds)

    async def forget(user_id: str, tokens: list[str]) -> int:
        return await forget_devices(ctx, user_id, tokens)

    email = ProviderChain(providers.email, breaker_factory=breaker)
    sms = ProviderChain(providers.sms, breaker_factory=breaker)
    push = PushChannel(providers.push, breaker, forget)
    for channel, names in (
        (Channel.EMAIL, [p.name for p in providers.email]),
        (Channel.SMS, [p.name for p in providers.sms]),
        (Channel.PUSH, [p.name for p in providers.push]),
    ):
        if names:
            log.info("%s providers, in failover order: %s", channel.value, ", ".join(names))
        else:
            log.warning(
                "no %s provider is configured: its notifications go to the DLQ (no_provider)", channel.value
            )
    policy = retry_policy(ctx)
    ChannelDelivery(ctx, Channel.EMAIL, EmailNotification, _sender(email), policy).register()
    ChannelDelivery(
        ctx, Channel.SMS, SmsNotification, _sender(sms), policy, on_refused=_sms_refused(ctx)
    ).register()
    ChannelDelivery(ctx, Channel.PUSH, PushNotification, push.send, policy).register()
