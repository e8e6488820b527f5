"""The user directory: a Faust table of profiles, fed by the compacted users topic and partitioned like the
routed events, so each worker holds exactly the profiles of the recipients it routes for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from schemas.base import describe_validation_error
from schemas.users import UserProfile
from streams.context import WorkerContext
from streams.errors import InvalidProfile


def parse_profile(key: bytes | None, raw: bytes) -> UserProfile:
    try:
        profile = UserProfile.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidProfile(describe_validation_error(exc)) from None
    if key is not None and key.decode(errors="replace") != profile.user_id:
        raise InvalidProfile(
            "message key must be the profile's user_id, so the profile meets its user's events"
        )
    return profile


def register_directory(ctx: WorkerContext) -> None:
    @ctx.app.agent(ctx.topics.users, name="herald.directory")
    async def directory(stream: Any) -> AsyncIterator[None]:
        async for event in stream.events():
            message = event.message
            try:
                if message.value is None:  # a tombstone: the user is deleted
                    if message.key is not None:
                        ctx.users.pop(message.key.decode(), None)
                else:
                    profile = parse_profile(message.key, message.value)
                    ctx.users[profile.user_id] = profile.model_dump(mode="json", exclude_none=True)
                ctx.metrics.profiles_applied.inc()
            except Exception as exc:
                await ctx.to_dead_letters(message, exc, stage="directory")
            yield None
