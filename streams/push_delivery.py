"""Sending one push notification to a user's devices: per-token outcomes, so a partial failure retries
only the tokens that failed, and tokens reported gone are removed from the profile."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from adapters.push import PushSender, PushToken, PushTokenKind
from schemas.notifications import NotificationBase, PushNotification
from streams.circuit import CircuitBreaker
from streams.errors import DeliveryError, PermanentDeliveryError, RetriableDeliveryError
from streams.failover import Attempt, Sent

ForgetTokens = Callable[[str, list[str]], Awaitable[object]]


class PushChannel:
    """The push providers in order. A device goes to the first provider that can address its kind of token
    and whose circuit is closed; FCM reaches Android, iOS and web through registration tokens."""

    def __init__(
        self, providers: list[PushSender], breaker_factory: Callable[[], CircuitBreaker], forget: ForgetTokens
    ) -> None:
        self.providers = providers
        self.breakers = {p.name: breaker_factory() for p in providers}
        self._forget = forget

    async def send(
        self, notification: NotificationBase, on_attempt: Callable[[Attempt], Awaitable[None]]
    ) -> Sent:
        assert isinstance(notification, PushNotification)
        if not self.providers:
            raise PermanentDeliveryError("no provider is configured for this channel", reason="no_provider")
        provider = next((p for p in self.providers if self.breakers[p.name].allow()), None)
        if provider is None:
            raise RetriableDeliveryError("every push provider is cooling down", reason="circuit_open")
        tokens = [PushToken(d.token, PushTokenKind(d.kind.value)) for d in notification.devices]
        started = time.perf_counter()
        try:
            result = await provider.send(notification, tokens)
        except DeliveryError as exc:
            if exc.retriable:
                self.breakers[provider.name].record_failure()
            await on_attempt(Attempt(provider.name, time.perf_counter() - started, error=exc))
            raise
        self.breakers[provider.name].record_success()
        elapsed = time.perf_counter() - started
        if result.invalid_tokens:
            await self._forget(notification.recipient, [t.value for t in result.invalid_tokens])
        delivered_ids = [o.message_id for o in result.delivered if o.message_id]
        first_error = next((o.error for o in result.failed if o.error is not None), None)
        await on_attempt(
            Attempt(
                provider.name,
                elapsed,
                provider_message_id=",".join(delivered_ids) or None,
                error=None if result.delivered else first_error,
            )
        )
        retry_tokens = {t.value for t in result.retry_tokens}
        if retry_tokens:
            # Only the devices that failed go round again: the others already have the notification.
            narrowed = notification.model_copy(
                update={"devices": [d for d in notification.devices if d.token in retry_tokens]}
            )
            retry_error = next(o.error for o in result.failed if o.token.value in retry_tokens and o.error)
            assert isinstance(retry_error, RetriableDeliveryError)
            raise RetriableDeliveryError(
                f"{len(retry_tokens)} of {len(tokens)} device(s) to retry: {retry_error.detail}",
                reason=retry_error.reason,
                provider_code=retry_error.provider_code,
                retry_after=retry_error.retry_after,
                retry_with=narrowed,
            )
        if not result.delivered:
            assert first_error is not None
            raise first_error
        return Sent(provider.name, ",".join(delivered_ids) or None)
