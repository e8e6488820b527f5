"""Failover across a channel's providers, in order, skipping those whose circuit is open. Every attempt is
reported, so each one becomes a status record and a metric."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from adapters.sender import Sender
from kernel.errors import DeliveryError, PermanentDeliveryError, RetriableDeliveryError
from schemas.reasons import DeliveryReason
from streams.delivery.circuit import CircuitBreaker

M = TypeVar("M")  # the message: EmailNotification for EmailSenders, SmsNotification for SmsSenders

# Permanent refusals that speak of the provider (its credentials, its account), not of the recipient:
# the next provider may well deliver, so these fail over like outages do.
PROVIDER_FAULTS = frozenset({DeliveryReason.PROVIDER_AUTH, DeliveryReason.PROVIDER_MISCONFIGURED})


@dataclass(frozen=True)
class Attempt:
    provider: str
    latency_seconds: float
    provider_message_id: str | None = None
    error: DeliveryError | None = None


@dataclass(frozen=True)
class Sent:
    provider: str
    provider_message_id: str | None


class ProviderChain(Generic[M]):
    """A one-message channel's providers (`EmailSender`s or `SmsSender`s) in failover order."""

    def __init__(
        self,
        providers: Sequence[Sender[M]],
        *,
        breaker_factory: Callable[[], CircuitBreaker],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.providers = list(providers)
        self.breakers = {provider.name: breaker_factory() for provider in self.providers}
        self._clock = clock

    async def send(self, message: M, on_attempt: Callable[[Attempt], Awaitable[None]]) -> Sent:
        """Deliver through the first provider that accepts; raise the last error if none does."""
        if not self.providers:
            raise PermanentDeliveryError(
                "no provider is configured for this channel", reason=DeliveryReason.NO_PROVIDER
            )
        last_error: DeliveryError | None = None
        last_retriable: RetriableDeliveryError | None = None
        for provider in self.providers:
            breaker = self.breakers[provider.name]
            if not breaker.allow():
                continue
            started = self._clock()
            try:
                message_id = await provider.send(message)
            except RetriableDeliveryError as exc:
                breaker.record_failure()
                await on_attempt(Attempt(provider.name, self._clock() - started, error=exc))
                last_error = last_retriable = exc
                continue
            except PermanentDeliveryError as exc:
                await on_attempt(Attempt(provider.name, self._clock() - started, error=exc))
                if exc.reason in PROVIDER_FAULTS:
                    breaker.record_failure()
                    last_error = exc
                    continue
                breaker.record_success()  # the provider answered; the recipient is at fault
                raise
            breaker.record_success()
            await on_attempt(Attempt(provider.name, self._clock() - started, provider_message_id=message_id))
            return Sent(provider.name, message_id)
        # An outage somewhere is worth a retry even if another provider refused for its own reasons.
        if last_retriable is not None:
            raise last_retriable
        if last_error is not None:
            raise last_error
        raise RetriableDeliveryError(
            "every provider of this channel is cooling down", reason=DeliveryReason.CIRCUIT_OPEN
        )
