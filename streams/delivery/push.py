"""Sending one push notification to a user's devices: per-token outcomes, so a partial failure retries
only the tokens that failed, and tokens reported gone are removed from the profile."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from adapters.push import PushResult, PushSender, PushToken, TokenOutcome
from kernel.errors import DeliveryError, PermanentDeliveryError, RetriableDeliveryError
from schemas.notifications import NotificationBase, PushNotification
from schemas.reasons import DeliveryReason
from schemas.users import Device, Platform
from streams.delivery.circuit import CircuitBreaker
from streams.delivery.failover import PROVIDER_FAULTS, Attempt, Sent
from streams.delivery.push_targets import plan_push

ForgetTokens = Callable[[str, list[str]], Awaitable[object]]


def _provider_failed(error: DeliveryError | None) -> bool:
    """An outage or the provider's own fault, as opposed to a refusal of this device."""
    return error is not None and (error.retriable or error.reason in PROVIDER_FAULTS)


class PushChannel:
    """The push providers in order (see `plan_push`): each device goes to the first provider that can
    address its token and whose circuit is closed; iOS APNs tokens take over when FCM fails for iOS."""

    def __init__(
        self, providers: list[PushSender], breaker_factory: Callable[[], CircuitBreaker], forget: ForgetTokens
    ) -> None:
        self.providers = providers
        self.breakers = {p.name: breaker_factory() for p in providers}
        self._by_name = {p.name: p for p in providers}
        self._forget = forget

    async def send(
        self, notification: NotificationBase, on_attempt: Callable[[Attempt], Awaitable[None]]
    ) -> Sent:
        assert isinstance(notification, PushNotification)
        if not self.providers:
            raise PermanentDeliveryError(
                "no provider is configured for this channel", reason=DeliveryReason.NO_PROVIDER
            )
        plan = plan_push(
            notification.devices,
            [(p.name, p.kinds) for p in self.providers],
            lambda name: self.breakers[name].allow(),
        )
        outcomes: list[tuple[str, Device, TokenOutcome]] = []
        for name, devices in plan.batches.items():
            outcomes += await self._send(self._by_name[name], notification, devices, on_attempt)
        if plan.standby and plan.standby_provider and plan.standing_in_for:
            ios = [o for n, d, o in outcomes if n == plan.standing_in_for and d.platform is Platform.IOS]
            if all(_provider_failed(o.error) for o in ios):
                standby = await self._send(
                    self._by_name[plan.standby_provider], notification, plan.standby, on_attempt
                )
                outcomes += standby
                if any(o.delivered for _, _, o in standby):
                    # The phones were reached through APNs: their FCM tokens need no retry.
                    covered = {id(o) for o in ios}
                    outcomes = [t for t in outcomes if id(t[2]) not in covered]
        for device in plan.unsupported:
            refused = PermanentDeliveryError(
                f"no push provider can address a {device.kind.value} token",
                reason=DeliveryReason.UNSUPPORTED_TOKEN,
            )
            outcomes.append(("", device, TokenOutcome(_token(device), error=refused)))
        for device in plan.cooling:
            cooling = RetriableDeliveryError(
                "every push provider for this device is cooling down", reason=DeliveryReason.CIRCUIT_OPEN
            )
            outcomes.append(("", device, TokenOutcome(_token(device), error=cooling)))
        return await self._conclude(notification, outcomes)

    async def _send(
        self,
        provider: PushSender,
        notification: PushNotification,
        devices: Sequence[Device],
        on_attempt: Callable[[Attempt], Awaitable[None]],
    ) -> list[tuple[str, Device, TokenOutcome]]:
        tokens = [_token(d) for d in devices]
        breaker = self.breakers[provider.name]
        started = time.perf_counter()
        try:
            result = await provider.send(notification, tokens)
        except DeliveryError as exc:
            if _provider_failed(exc):
                breaker.record_failure()
            await on_attempt(Attempt(provider.name, time.perf_counter() - started, error=exc))
            result = PushResult(tuple(TokenOutcome(t, error=exc) for t in tokens))
        else:
            if not result.delivered and all(_provider_failed(o.error) for o in result.outcomes):
                breaker.record_failure()
            else:
                breaker.record_success()
            delivered_ids = [o.message_id for o in result.delivered if o.message_id]
            first_error = next((o.error for o in result.failed if o.error is not None), None)
            await on_attempt(
                Attempt(
                    provider.name,
                    time.perf_counter() - started,
                    provider_message_id=",".join(delivered_ids) or None,
                    error=None if result.delivered else first_error,
                )
            )
        return [(provider.name, d, o) for d, o in zip(devices, result.outcomes, strict=True)]

    async def _conclude(
        self, notification: PushNotification, outcomes: list[tuple[str, Device, TokenOutcome]]
    ) -> Sent:
        invalid = [o.token.value for _, _, o in outcomes if o.token_invalid]
        if invalid:
            await self._forget(notification.recipient, invalid)
        delivered = [(name, o) for name, _, o in outcomes if o.delivered]
        retry = [(d, o.error) for _, d, o in outcomes if isinstance(o.error, RetriableDeliveryError)]
        if retry:
            # Only the devices that failed go round again: the others already have the notification.
            first = retry[0][1]
            raise RetriableDeliveryError(
                f"{len(retry)} of {len(notification.devices)} device(s) to retry: {first.detail}",
                reason=first.reason,
                provider_code=first.provider_code,
                retry_after=max((e.retry_after or 0.0 for _, e in retry), default=0.0) or None,
                retry_with=notification.model_copy(update={"devices": [d for d, _ in retry]}),
            )
        if not delivered:
            error = next(o.error for _, _, o in outcomes if o.error is not None)
            raise error
        ids = [o.message_id for _, o in delivered if o.message_id]
        return Sent(delivered[0][0], ",".join(ids) or None)


def _token(device: Device) -> PushToken:
    return PushToken(device.token, device.kind)
