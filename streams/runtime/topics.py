"""Herald's topics as Faust topic objects, named by `kernel.topics`. Raw bytes in and out: Herald does its own
JSON with pydantic, so no Faust codec (and never pickle) touches a payload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from kernel.settings import Settings
from kernel.topics import TopicNames
from schemas.channels import Channel


@dataclass(frozen=True)
class Topics:
    """The topics the worker's agents consume; records are produced by name (see streams.runtime.outbox)."""

    names: TopicNames
    events: Any
    users: Any
    preferences: Any
    routed: Any
    delivery: dict[Channel, Any]
    retries: dict[Channel, tuple[Any, ...]]
    scheduled: dict[int, Any]


# How many fetched batches a batch-fed topic's queue holds before the fetcher waits: each can be a partition's
# whole fetch (up to a MiB), so Faust's default of 4,096 queued messages would hold gigabytes.
BATCH_QUEUE_SIZE = 32


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    names = TopicNames.from_settings(settings)
    batch_fed = names.batch_fed

    def topic(name: str) -> Any:
        return app.topic(
            name,
            maxsize=BATCH_QUEUE_SIZE if name in batch_fed else None,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            replicas=settings.replication_factor,
            compacting=(name in names.compacted) or None,
        )

    return Topics(
        names=names,
        events=topic(names.events),
        users=topic(names.users),
        preferences=topic(names.preferences),
        routed=topic(names.routed),
        delivery={channel: topic(name) for channel, name in names.delivery.items()},
        retries={channel: tuple(topic(name) for name in tiers) for channel, tiers in names.retries.items()},
        scheduled={tier: topic(name) for tier, name in names.scheduled.items()},
    )
