"""Wiring each delivery channel: its providers in failover order behind circuit breakers, the retry policy and
tier topics, and the hygiene that follows a provider's report that an address is gone for good."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from kernel.settings import Settings
from kernel.topics import TopicNames
from schemas.channels import Channel
from schemas.notifications import EmailNotification, NotificationBase, PushNotification, SmsNotification
from streams.delivery.answers import Answer, Chain, Send, ask
from streams.delivery.circuit import CircuitBreaker
from streams.delivery.failover import ProviderChain
from streams.delivery.hygiene import Hygiene, push_hygiene, sms_hygiene
from streams.delivery.providers import Providers
from streams.delivery.push import PushChannel
from streams.delivery.retry_policy import RetryPolicy
from streams.delivery.steps import ChannelSpec

log = logging.getLogger("herald.channels")

N = TypeVar("N", bound=NotificationBase)


@dataclass(frozen=True)
class WiredChannel(Generic[N]):
    """A channel's step configuration and the one way its agents reach its providers."""

    spec: ChannelSpec[N]
    send: Send[N]


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        base_delay_seconds=settings.retry_base_delay_seconds,
        multiplier=settings.retry_multiplier,
        max_delay_seconds=settings.retry_max_delay_seconds,
        jitter=settings.retry_jitter,
        max_attempts=settings.retry_max_attempts,
        tiers=settings.retry_tiers,
    )


def wire_channels(settings: Settings, names: TopicNames, providers: Providers) -> list[WiredChannel[Any]]:
    """Email, SMS and push, each with its own breakers (built once: they must outlive a batch)."""

    def breaker() -> CircuitBreaker:
        return CircuitBreaker(settings.circuit_failure_threshold, settings.circuit_cooldown_seconds)

    for channel, configured in (
        (Channel.EMAIL, [p.name for p in providers.email]),
        (Channel.SMS, [p.name for p in providers.sms]),
        (Channel.PUSH, [p.name for p in providers.push]),
    ):
        if configured:
            log.info("%s providers, in failover order: %s", channel.value, ", ".join(configured))
        else:
            log.warning(
                "no %s provider is configured: its notifications go to the DLQ (no_provider)", channel.value
            )
    policy = retry_policy(settings)

    def spec(channel: Channel, model: type[N], hygiene: Hygiene[N] | None = None) -> ChannelSpec[N]:
        return ChannelSpec(
            channel=channel,
            model=model,
            policy=policy,
            retry_topics=names.retries[channel],
            users_topic=names.users,
            dedup_retention_seconds=settings.dedup_retention_seconds,
            hygiene=hygiene,
        )

    email = ProviderChain(providers.email, breaker_factory=breaker)
    sms = ProviderChain(providers.sms, breaker_factory=breaker)
    push = PushChannel(providers.push, breaker, _note_gone_tokens)
    return [
        WiredChannel(spec(Channel.EMAIL, EmailNotification), _asking(email.send)),
        WiredChannel(spec(Channel.SMS, SmsNotification, sms_hygiene), _asking(sms.send)),
        WiredChannel(spec(Channel.PUSH, PushNotification, push_hygiene), _asking_push(push)),
    ]


def _asking(chain: Chain[N]) -> Send[N]:
    async def send(notification: N) -> Answer:
        return await ask(chain, notification)

    return send


# `PushChannel` reports the tokens a provider called gone through a callback, in the middle of its send; the
# step wants them in the answer. The callback runs in the task that asked, so a context variable carries
# them from one to the other, whatever else the channel is sending meanwhile.
_gone_tokens: ContextVar[list[str] | None] = ContextVar("herald_gone_tokens", default=None)


async def _note_gone_tokens(user_id: str, tokens: list[str]) -> None:
    gone = _gone_tokens.get()
    if gone is not None:
        gone.extend(tokens)


def _asking_push(push: PushChannel) -> Send[PushNotification]:
    async def send(notification: PushNotification) -> Answer:
        gone: list[str] = []
        reset = _gone_tokens.set(gone)
        try:
            answer = await ask(push.send, notification)
        finally:
            _gone_tokens.reset(reset)
        return replace(answer, gone_tokens=tuple(gone))

    return send
