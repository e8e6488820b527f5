"""Wiring each delivery channel to its agents: the providers in failover order, the retry policy, and what
to do when a provider refuses an address for good."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.channels import Channel
from schemas.notifications import EmailNotification, NotificationBase, PushNotification, SmsNotification
from streams.context import WorkerContext
from streams.delivery import ChannelDelivery
from streams.failover import Attempt, ProviderChain, Sent
from streams.providers import Providers
from streams.retry_policy import RetryPolicy

log = logging.getLogger("herald.channels")


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


def _sender(
    chain: ProviderChain[Any],
) -> Callable[[NotificationBase, Callable[[Attempt], Awaitable[None]]], Awaitable[Sent]]:
    async def send(notification: NotificationBase, on_attempt: Callable[[Attempt], Awaitable[None]]) -> Sent:
        return await chain.send(notification, on_attempt)

    return send


def register_channels(ctx: WorkerContext, providers: Providers) -> None:
    email, sms, push = providers.chains(ctx.settings)
    policy = retry_policy(ctx)
    for channel, chain in ((Channel.EMAIL, email), (Channel.SMS, sms), (Channel.PUSH, push)):
        if chain.providers:
            log.info(
                "%s providers, in failover order: %s",
                channel.value,
                ", ".join(p.name for p in chain.providers),
            )
        else:
            log.warning(
                "no %s provider is configured: %s notifications go to the DLQ (no_provider)", channel.value
            )
    ChannelDelivery(ctx, Channel.EMAIL, EmailNotification, _sender(email), policy).register()
    ChannelDelivery(ctx, Channel.SMS, SmsNotification, _sender(sms), policy).register()
    ChannelDelivery(ctx, Channel.PUSH, PushNotification, _sender(push), policy).register()
