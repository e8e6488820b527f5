"""Token hygiene: an address a provider reports as gone for good (an unregistered push token, an SMS number
that unsubscribed) is removed from the recipient's profile and never tried again."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from schemas.users import ProfileUpdate, UserProfile
from streams.runtime.context import WorkerContext

log = logging.getLogger("herald.hygiene")


async def publish_update(ctx: WorkerContext, update: ProfileUpdate) -> None:
    # Through the users topic, like any other profile change: the directory agent merges it (only the field
    # named changes), and the compacted topic keeps it for every later restart.
    await ctx.send(ctx.topics.users, update.user_id, update)


def _current(ctx: WorkerContext, user_id: str) -> UserProfile | None:
    stored = ctx.users.get(user_id)
    return None if stored is None else UserProfile.model_validate(stored, strict=False)


async def forget_devices(ctx: WorkerContext, user_id: str, tokens: Iterable[str]) -> int:
    gone = set(tokens)
    profile = _current(ctx, user_id)
    if profile is None or not gone:
        return 0
    kept = [device for device in profile.devices if device.token not in gone]
    removed = len(profile.devices) - len(kept)
    if removed:
        await publish_update(ctx, ProfileUpdate(user_id=user_id, devices=kept))
        ctx.metrics.addresses_removed.labels(channel="push").inc(removed)
        log.info("removed %d invalid push token(s) of a recipient", removed)
    return removed


async def forget_phone(ctx: WorkerContext, user_id: str, phone: str) -> bool:
    profile = _current(ctx, user_id)
    if profile is None or profile.phone != phone:
        return False
    await publish_update(ctx, ProfileUpdate(user_id=user_id, phone=None))
    ctx.metrics.addresses_removed.labels(channel="sms").inc()
    log.info("removed an unsubscribed phone number from a recipient's profile")
    return True
