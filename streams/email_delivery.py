"""The email channel's agent: one notification from the email topic to the configured provider, with a
status record for each attempt and the DLQ for what cannot be delivered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from schemas.channels import Channel
from schemas.notifications import EmailNotification
from schemas.status import DeliveryStatus, Outcome
from streams.context import WorkerContext
from streams.errors import DeliveryError, PermanentDeliveryError, RetriableDeliveryError

log = logging.getLogger("herald.email")

# In-place retries for this slice; retry topics that never block the partition replace them (issue 4).
RETRY_DELAYS_SECONDS = (0.5, 2.0, 5.0)


def register_email(ctx: WorkerContext) -> None:
    @ctx.app.agent(ctx.topics.delivery[Channel.EMAIL], name="herald.email")
    async def email(stream: Any) -> AsyncIterator[None]:
        async for event in stream.events():
            message = event.message
            try:
                notification = EmailNotification.model_validate_json(message.value)
                await deliver_email(ctx, notification)
            except Exception as exc:
                await ctx.to_dead_letters(message, exc, stage="email")
            yield None


async def deliver_email(ctx: WorkerContext, notification: EmailNotification) -> None:
    sender = ctx.email_sender
    if sender is None:
        raise PermanentDeliveryError(
            "no email provider is configured (set HERALD_SMTP_HOST)", reason="no_provider"
        )
    attempt = notification.attempt
    while True:
        started = time.perf_counter()
        outcome = Outcome.DELIVERED
        error: DeliveryError | None = None
        provider_id: str | None = None
        try:
            provider_id = await sender.send(notification)
        except DeliveryError as exc:
            error = exc
            outcome = Outcome.FAILED
        elapsed = time.perf_counter() - started
        ctx.metrics.provider_latency.labels(channel="email", provider=sender.name).observe(elapsed)
        ctx.metrics.deliveries.labels(channel="email", provider=sender.name, outcome=outcome.value).inc()
        await ctx.send_status(
            DeliveryStatus(
                notification_id=notification.notification_id,
                event_id=notification.event_id,
                recipient=notification.recipient,
                channel=Channel.EMAIL,
                provider=sender.name,
                outcome=outcome,
                attempt=attempt,
                at=ctx.clock(),
                latency_seconds=elapsed,
                provider_message_id=provider_id,
                reason=error.reason if error else None,
            )
        )
        if error is None:
            ctx.metrics.end_to_end_latency.labels(channel="email").observe(
                max(0.0, (ctx.clock() - notification.occurred_at).total_seconds())
            )
            log.info(
                "delivered notification=%s event=%s channel=email",
                notification.notification_id,
                notification.event_id,
            )
            return
        if isinstance(error, RetriableDeliveryError) and attempt <= len(RETRY_DELAYS_SECONDS):
            delay = max(RETRY_DELAYS_SECONDS[attempt - 1], error.retry_after or 0.0)
            attempt += 1
            await asyncio.sleep(delay)
            continue
        if isinstance(error, RetriableDeliveryError):
            raise RetriableDeliveryError(
                f"gave up after {attempt} attempts: {error.detail}",
                reason="retries_exhausted",
                provider_code=error.provider_code,
            ) from error
        raise error
