"""The user directory: a Faust table of profiles, fed by the compacted users topic and partitioned like the
routed events, so each worker holds exactly the profiles of the recipients it routes for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import faust
from pydantic import ValidationError

from schemas.base import describe_validation_error
from schemas.users import UserProfile
from streams.context import WorkerContext
from streams.errors import InvalidProfile
from streams.settings import Settings


def declare_users_table(app: faust.App, settings: Settings) -> Any:
    # JSON keys and values: a str key survives the changelog round trip as str (raw would come back as bytes).
    changelog = app.topic(
        f"{settings.app_id}-users-changelog",
        key_serializer="json",
        value_serializer="json",
        partitions=settings.partitions,
        replicas=settings.replication_factor,
        compacting=True,
        internal=True,
    )
    return app.Table("users", default=None, partitions=settings.partitions, changelog_topic=changelog)


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
