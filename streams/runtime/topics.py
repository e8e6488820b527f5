"""Herald's topics as Faust topic objects, named by the settings. Raw bytes in and out: Herald does its own
JSON with pydantic, so no Faust codec (and never pickle) touches a payload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from kernel.settings import Settings
from schemas.channels import Channel


@dataclass(frozen=True)
class Topics:
    events: Any
    users: Any
    preferences: Any
    routed: Any
    delivery: dict[Channel, Any]
    status: Any
    dlq: Any


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    def topic(name: str, *, compacting: bool = False) -> Any:
        return app.topic(
            name,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            replicas=settings.replication_factor,
            compacting=compacting or None,
        )

    return Topics(
        events=topic(settings.topic_events),
        users=topic(settings.topic_users, compacting=True),
        preferences=topic(settings.topic_preferences, compacting=True),
        routed=topic(settings.topic_routed),
        delivery={Channel(ch): topic(name) for ch, name in settings.delivery_topics.items()},
        status=topic(settings.topic_status),
        dlq=topic(settings.topic_dlq),
    )
