"""The delivery agents of one channel: fresh notifications in batches, retries from tiered retry topics.

Within a batch, each user's notifications go out in order while different users' go out concurrently. A
batch's offsets are committed only after every notification in it was delivered, parked on a retry topic or
dead-lettered, so a crash replays rather than loses; the delivered-ids table then keeps a replay from
reaching the person twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from pydantic import ValidationError

from kernel.errors import DeliveryError, InvalidEvent, PermanentDeliveryError, RetriableDeliveryError
from kernel.topics import retry_topic_name
from schemas.base import describe_validation_error
from schemas.channels import Channel
from schemas.notifications import NotificationBase
from schemas.status import DeliveryStatus, Outcome
from streams.delivery.dedup import already_delivered, remember
from streams.delivery.failover import Attempt, Sent
from streams.delivery.retry_policy import RetryPolicy
from streams.runtime.context import WorkerContext, bind_event

log = logging.getLogger("herald.delivery")

Send = Callable[[NotificationBase, Callable[[Attempt], Awaitable[None]]], Awaitable[Sent]]
# Called after a permanent refusal, e.g. to drop an unregistered push token from the profile.
OnRefused = Callable[[NotificationBase, PermanentDeliveryError], Awaitable[None]]


class RecipientLocks:
    """A lock per recipient, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, recipient: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(recipient, (asyncio.Lock(), 0))
        self._locks[recipient] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[recipient]
            if users <= 1:
                del self._locks[recipient]
            else:
                self._locks[recipient] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class ChannelDelivery:
    def __init__(
        self,
        ctx: WorkerContext,
        channel: Channel,
        model: type[NotificationBase],
        send: Send,
        policy: RetryPolicy,
        *,
        on_refused: OnRefused | None = None,
    ) -> None:
        self.ctx = ctx
        self.channel = channel
        self.model = model
        self.send = send
        self.policy = policy
        self.on_refused = on_refused
        base = ctx.settings.delivery_topics[channel.value]
        self.retry_topics = [ctx.topic(retry_topic_name(base, tier)) for tier in range(1, policy.tiers + 1)]
        self._limit = asyncio.Semaphore(ctx.settings.delivery_concurrency)
        # One delivery at a time per recipient across this channel's fresh and retry agents, so two copies
        # of a notification (a replay and its parked retry) can never both pass the dedup check.
        self._recipients = RecipientLocks()

    def register(self) -> None:
        app = self.ctx.app
        settings = self.ctx.settings

        async def fresh(stream: Any) -> AsyncIterator[None]:
            async for events in stream.take_events(
                settings.delivery_batch_size, within=settings.delivery_batch_seconds
            ):
                await self.ctx.settle(f"deliver.{self.channel.value}", partial(self.handle_batch, events))
                yield None

        app.agent(self.ctx.topics.delivery[self.channel], name=f"herald.deliver.{self.channel.value}")(fresh)

        for tier, topic in enumerate(self.retry_topics, start=1):

            async def retry(stream: Any) -> AsyncIterator[None]:
                # One at a time, in order: a tier's notifications all wait about as long, so the head of
                # the partition is always the next one due.
                async for event in stream.events():
                    await self.ctx.settle(
                        f"deliver.{self.channel.value}.retry",
                        partial(self.handle_batch, [event], wait_until_due=True),
                    )
                    yield None

            app.agent(topic, name=f"herald.deliver.{self.channel.value}.retry{tier}")(retry)

    async def handle_batch(self, events: list[Any], *, wait_until_due: bool = False) -> None:
        by_user: dict[bytes | None, list[Any]] = defaultdict(list)
        for event in events:
            by_user[event.message.key].append(event)

        async def run_user(user_events: list[Any]) -> None:
            for event in user_events:
                bind_event(event)
                async with self._limit:
                    await self.handle_message(event.message, wait_until_due=wait_until_due)

        await asyncio.gather(*(run_user(user_events) for user_events in by_user.values()))

    async def handle_message(self, message: Any, *, wait_until_due: bool = False) -> None:
        """Never raises for a bad notification or a provider's answer: every message ends delivered,
        skipped, scheduled for retry or on the DLQ. Only producing can fail; ctx.settle then runs the batch
        again."""
        try:
            try:
                notification = self.model.model_validate_json(message.value)
            except ValidationError as exc:
                raise InvalidEvent(describe_validation_error(exc), reason="invalid_notification") from None
            if wait_until_due and notification.not_before is not None:
                delay = (notification.not_before - self.ctx.clock()).total_seconds()
                if delay > 0:
                    await asyncio.sleep(delay)
            async with self._recipients.hold(notification.recipient):
                await self.deliver(notification, message)
        except Exception as exc:
            await self.ctx.to_dead_letters(message, exc, stage=self.channel.value)

    async def deliver(self, notification: NotificationBase, message: Any) -> None:
        ctx = self.ctx
        retention = ctx.settings.dedup_retention_seconds
        if already_delivered(
            ctx.delivered.get(notification.recipient),
            notification.notification_id,
            ctx.clock().timestamp(),
            retention,
        ):
            await self._status(notification, "-", Outcome.SKIPPED, reason="duplicate")
            ctx.metrics.notifications_skipped.labels(channel=self.channel.value, reason="duplicate").inc()
            return

        accepted: list[Attempt] = []

        async def on_attempt(attempt: Attempt) -> None:
            outcome = Outcome.DELIVERED if attempt.error is None else Outcome.FAILED
            ctx.metrics.provider_latency.labels(
                channel=self.channel.value, provider=attempt.provider
            ).observe(attempt.latency_seconds)
            ctx.metrics.deliveries.labels(
                channel=self.channel.value, provider=attempt.provider, outcome=outcome.value
            ).inc()
            if attempt.error is None:
                accepted.append(attempt)  # recorded once the dedup entry is durable (below)
            else:
                await self._attempt_status(notification, attempt)

        try:
            try:
                sent = await self.send(notification, on_attempt)
            except RetriableDeliveryError as exc:
                await self._retry_or_give_up(notification, message, exc)
                return
            except PermanentDeliveryError as exc:
                if self.on_refused is not None:
                    await self.on_refused(notification, exc)
                await self._dead_letter(notification, message, exc)
                return
            # Durable before the delivered status: a replay after a crash must find this entry, so the
            # changelog record is awaited here, not left to the next commit (which may be a batch away).
            record = remember(
                ctx.delivered.get(notification.recipient),
                notification.notification_id,
                ctx.clock().timestamp(),
                retention,
                ctx.settings.dedup_max_per_recipient,
            )
            ctx.delivered.data[notification.recipient] = record
            await ctx.delivered.send_changelog(message.partition, notification.recipient, record)
        finally:
            # A partial push (some devices reached, the rest to retry) is recorded too, without dedup: its
            # retry carries only the devices that were not reached.
            for attempt in accepted:
                await self._attempt_status(notification, attempt)
        ctx.metrics.end_to_end_latency.labels(channel=self.channel.value).observe(
            max(0.0, (ctx.clock() - notification.occurred_at).total_seconds())
        )
        log.info(
            "delivered",
            extra={
                "notification_id": notification.notification_id,
                "event_id": notification.event_id,
                "channel": self.channel.value,
                "provider": sent.provider,
                "attempt": notification.attempt,
                "outcome": "delivered",
            },
        )

    async def _retry_or_give_up(
        self, notification: NotificationBase, message: Any, exc: RetriableDeliveryError
    ) -> None:
        ctx = self.ctx
        if self.policy.exhausted(notification.attempt):
            gave_up = RetriableDeliveryError(
                f"gave up after {notification.attempt} attempts: {exc.detail}",
                reason="retries_exhausted",
                provider_code=exc.provider_code,
            )
            await self._dead_letter(notification, message, gave_up)
            return
        next_attempt = notification.attempt + 1
        base = exc.retry_with if isinstance(exc.retry_with, NotificationBase) else notification
        retry = base.model_copy(
            update={
                "attempt": next_attempt,
                "not_before": self.policy.not_before(
                    ctx.clock(), notification.attempt, retry_after=exc.retry_after
                ),
            }
        )
        topic = self.retry_topics[self.policy.tier_for(next_attempt) - 1]
        await ctx.send(topic, notification.recipient, retry)
        log.info(
            "retry scheduled",
            extra={
                "notification_id": notification.notification_id,
                "event_id": notification.event_id,
                "channel": self.channel.value,
                "outcome": "retry",
                "reason": exc.reason,
                "attempt": next_attempt,
            },
        )
        ctx.metrics.retries.labels(channel=self.channel.value, reason=exc.reason).inc()

    async def _attempt_status(self, notification: NotificationBase, attempt: Attempt) -> None:
        error = attempt.error
        await self._status(
            notification,
            attempt.provider,
            Outcome.DELIVERED if error is None else Outcome.FAILED,
            latency=attempt.latency_seconds,
            provider_message_id=attempt.provider_message_id,
            reason=error.reason if error else None,
            provider_code=error.provider_code if error else None,
        )

    async def _dead_letter(self, notification: NotificationBase, message: Any, exc: DeliveryError) -> None:
        log.warning(
            "dead-lettered",
            extra={
                "notification_id": notification.notification_id,
                "event_id": notification.event_id,
                "channel": self.channel.value,
                "outcome": "dead_lettered",
                "reason": exc.reason,
            },
        )
        await self.ctx.to_dead_letters(message, exc, stage=self.channel.value)
        await self._status(
            notification, "-", Outcome.DEAD_LETTERED, reason=exc.reason, provider_code=exc.provider_code
        )

    async def _status(
        self,
        notification: NotificationBase,
        provider: str,
        outcome: Outcome,
        *,
        latency: float | None = None,
        provider_message_id: str | None = None,
        reason: str | None = None,
        provider_code: str | None = None,
    ) -> None:
        await self.ctx.send_status(
            DeliveryStatus(
                notification_id=notification.notification_id,
                event_id=notification.event_id,
                recipient=notification.recipient,
                channel=self.channel,
                provider=provider,
                outcome=outcome,
                attempt=notification.attempt,
                at=self.ctx.clock(),
                latency_seconds=latency,
                provider_message_id=provider_message_id,
                reason=reason,
                provider_code=provider_code,
            )
        )
