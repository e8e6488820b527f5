"""The user directory: profiles and preferences in Faust tables, fed by their compacted topics and
partitioned like the routed events, so each worker holds exactly the state of the recipients it routes for."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from kernel.errors import InvalidPreferences, InvalidProfile
from schemas.base import describe_validation_error
from schemas.preferences import Preferences, PreferencesUpdate, merge
from schemas.users import ProfileUpdate, UserProfile
from streams.runtime.context import WorkerContext, bind_event

log = logging.getLogger("herald.directory")

_partitioner = DefaultPartitioner()


def parse_update(key: bytes | None, raw: bytes) -> ProfileUpdate:
    try:
        update = ProfileUpdate.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidProfile(describe_validation_error(exc)) from None
    if key is not None and key.decode(errors="replace") != update.user_id:
        raise InvalidProfile(
            "message key must be the profile's user_id, so the profile meets its user's events"
        )
    return update


def home_partition(user_id: str, partitions: int) -> int:
    """Where Kafka's default (murmur2) partitioner puts this user: where Herald keys the user's events."""
    every = list(range(partitions))
    return int(_partitioner(user_id.encode(), every, every))


Apply = Callable[[WorkerContext, str, Any], Awaitable[None]]


def _register_state_agent(ctx: WorkerContext, topic: Any, name: str, stage: str, apply: Apply) -> None:
    """An agent that applies per-user state records in batches; a bad record goes to the DLQ alone."""

    async def apply_batch(events: list[Any]) -> None:
        for event in events:
            bind_event(event)
            try:
                user_id = await _at_home(ctx, topic, event.message)
                if user_id is not None:
                    await apply(ctx, user_id, event.message)
            except Exception as exc:
                await ctx.to_dead_letters(event.message, exc, stage=stage)

    async def agent(stream: Any) -> AsyncIterator[None]:
        async for events in stream.take_events(ctx.settings.batch_size, within=ctx.settings.batch_seconds):
            await ctx.settle(stage, partial(apply_batch, events))
            yield None

    ctx.app.agent(topic, name=name)(agent)


async def _at_home(ctx: WorkerContext, topic: Any, message: Any) -> str | None:
    """The record's user id if it is on that user's partition; otherwise it is forwarded there and None."""
    if message.key is None:
        raise InvalidProfile("a state record needs the user id as its key", reason="invalid_key")
    user_id: str = message.key.decode(errors="replace")
    home = home_partition(user_id, ctx.settings.partitions)
    if message.partition == home:
        return user_id
    # A producer with another partitioner (librdkafka's default is not murmur2) put it on a partition where
    # this user's events never arrive: move it home instead of applying it here.
    await ctx.produce(topic, message.key, message.value, partition=home)
    ctx.metrics.profiles_rehomed.inc()
    return None


def register_directory(ctx: WorkerContext) -> None:
    _register_state_agent(ctx, ctx.topics.users, "herald.directory", "directory", apply_profile)
    _register_state_agent(ctx, ctx.topics.preferences, "herald.preferences", "preferences", apply_preferences)


async def apply_profile(ctx: WorkerContext, user_id: str, message: Any) -> None:
    if message.value is None:  # a tombstone: the user is deleted
        ctx.users.pop(user_id, None)
    else:
        update = parse_update(message.key, message.value)
        stored = ctx.users.get(user_id)
        current = UserProfile.model_validate(stored, strict=False) if stored is not None else None
        if not update.holds_for(current):
            # e.g. a bounce for an address the user has replaced since: the update no longer applies.
            ctx.metrics.profiles_skipped.inc()
            return
        try:
            profile = update.apply_to(current)
        except ValidationError as exc:
            raise InvalidProfile(describe_validation_error(exc)) from None
        ctx.users[user_id] = profile.model_dump(mode="json", exclude_none=True)
        if not update.is_whole:
            # The users topic is compacted: only a key's newest record survives. After a partial update the
            # whole merged profile follows it, so what compaction keeps is always complete. (Applying that
            # record again changes nothing and publishes nothing.)
            await ctx.send(ctx.topics.users, user_id, ProfileUpdate.whole(profile))
    ctx.metrics.profiles_applied.inc()


def parse_preferences(key: bytes, raw: bytes) -> PreferencesUpdate:
    try:
        update = PreferencesUpdate.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidPreferences(describe_validation_error(exc)) from None
    if key.decode(errors="replace") != update.user_id:
        raise InvalidPreferences("message key must be the user_id the preferences are for")
    return update


async def apply_preferences(ctx: WorkerContext, user_id: str, message: Any) -> None:
    if message.value is None:
        ctx.preferences.pop(user_id, None)
    else:
        update = parse_preferences(message.key, message.value)
        stored = ctx.preferences.get(user_id)
        current = Preferences.model_validate(stored, strict=False) if stored is not None else None
        try:
            merged = merge(current, update)
        except (ValidationError, ValueError) as exc:
            raise InvalidPreferences(str(exc)) from None
        ctx.preferences[user_id] = merged.model_dump(mode="json")
        if not update.is_whole:
            # As for profiles: what compaction keeps of a user must be whole.
            await ctx.send(ctx.topics.preferences, user_id, PreferencesUpdate.whole(merged))
    ctx.metrics.preferences_applied.inc()
