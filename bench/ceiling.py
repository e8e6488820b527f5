"""The delivery ceiling: a bare loop over the provider calls Herald's delivery agents make, through the very
senders the worker builds from its settings (SMTP with aiosmtplib, the Twilio SDK), with as many sends in
flight per channel as a worker allows (HERALD_DELIVERY_CONCURRENCY), against the bench's provider sinks. No
Kafka, no dedup, no failover, no statuses: what the providers' side allows.
`python -m bench.ceiling NOTIFICATIONS RESULT.json CHANNEL...`, with the worker's environment."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from bench.peer_job import RecipientStates, RoutingJob
from bench.workload import MARK, backlog, user_id
from kernel.settings import Settings, load_settings
from schemas.channels import Channel
from schemas.notifications import EmailNotification, SmsNotification
from streams.delivery.providers import build_providers

Notification = EmailNotification | SmsNotification


def routed_sample(settings: Settings, channel: str) -> Notification:
    """The notification Herald's routing makes of a bench event for `channel`: the shape every send copies."""
    job = RoutingJob(settings, RecipientStates(1, settings.partitions))
    _, _, _, event = next(backlog("-", 1, 1, "ceiling"))
    for record in job.outputs(event):
        if record.topic == job.topics.delivery[Channel(channel)] and record.value is not None:
            model = EmailNotification if channel == "email" else SmsNotification
            return model.model_validate_json(record.value)
    raise RuntimeError(f"the bench's rule routes nothing to {channel}")


def numbered(sample: Notification, seq: int) -> Notification:
    """The sample for notification `seq`: its own id and recipient, stamped with when it was sent."""
    stamp = f"{MARK} {seq} {time.time():.6f}"
    uid = user_id(seq)
    update: dict[str, Any] = {"notification_id": f"ntf_ceiling_{seq}", "recipient": uid}
    if isinstance(sample, EmailNotification):
        update |= {"to": f"{uid}@bench.example.com", "subject": stamp}
    else:
        update |= {"text": stamp}
    return sample.model_copy(update=update)


async def drive(send: Callable[[int], Awaitable[Any]], notifications: int, concurrency: int) -> float:
    """Seconds to make `notifications` sends with `concurrency` in flight; raises on the first failure."""
    numbers = iter(range(notifications))

    async def lane() -> None:
        for seq in numbers:  # shared: each lane takes the next number
            await send(seq)

    started = time.monotonic()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.monotonic() - started


async def run(channels: list[str], notifications: int) -> dict[str, Any]:
    """Each channel in turn, through the first sender of its failover order (a healthy worker's)."""
    settings = load_settings()
    providers = build_providers(settings)
    results: dict[str, Any] = {}
    try:
        for channel in channels:
            senders: list[Any] = providers.email if channel == "email" else providers.sms
            if not senders:
                raise RuntimeError(f"no {channel} provider configured (HERALD_{channel.upper()}_PROVIDERS)")
            sender, sample = senders[0], routed_sample(settings, channel)

            async def send(seq: int, sender: Any = sender, sample: Notification = sample) -> None:
                await sender.send(numbered(sample, seq))

            await drive(send, min(notifications, 64), settings.delivery_concurrency)  # connections, imports
            cpu_before = time.process_time()
            seconds = await drive(send, notifications, settings.delivery_concurrency)
            cpu = time.process_time() - cpu_before
            results[channel] = {
                "provider": sender.name,
                "notifications": notifications,
                "seconds": seconds,
                "notifications_per_second": notifications / seconds,
                "concurrency": settings.delivery_concurrency,
                # This process's CPU (all its threads) per send: what the SDK call alone costs a worker, the
                # floor under Herald's own CPU per notification on this channel.
                "cpu_us_per_notification": cpu / notifications * 1e6,
            }
    finally:
        await providers.aclose()
    return results


def main() -> None:
    notifications, out, channels = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    out.write_bytes(orjson.dumps(asyncio.run(run(channels, notifications))))


if __name__ == "__main__":
    main()
