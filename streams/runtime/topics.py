"""Herald's topics as Faust topic objects, named by `kernel.topics`. Raw bytes in and out: Herald does its own
JSON with pydantic, so no Faust codec (and never pickle) touches a payload."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
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


# How many fetched batches of each of its partitions a batch-fed topic's queue holds before Faust stops
# handing that partition over. Each batch can be a partition's whole fetch (up to a MiB).
BATCHES_PER_PARTITION = 4


def batch_fed_topic(app: faust.App, *names: str, partitions: int, **options: Any) -> Any:
    """A topic whose stream queue holds a few fetched batches per partition, not Faust's 4,096 messages: one
    message is a partition's whole fetch here. Faust's `App.topic` takes a `maxsize` and drops it
    (faust-streaming 0.15), so these queues had Faust's size: a worker draining the bench's backlog held its
    whole delivery backlog in them, 75,546 records (bench/RESULTS.md, thirteenth session). Set on the topic,
    the size reaches the clones agents iterate, whose queues are made from it.

    Faust stops handing a partition over once it finds the queue at 80% of its size, and a fetch loop that
    meets a full queue waits there, holding every other topic's records back. So the queue keeps room for one
    more batch from each partition beyond that mark: BATCHES_PER_PARTITION per partition up to the mark, one
    more per partition past it, and one so that the last put never finds the queue full."""
    topic = app.topic(*names, partitions=partitions, **options)
    feeding = partitions * len(names)
    topic.maxsize = BATCHES_PER_PARTITION * feeding + feeding + 1
    return topic


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    names = TopicNames.from_settings(settings)
    batch_fed = names.batch_fed

    def topic(name: str) -> Any:
        make = partial(batch_fed_topic, app) if name in batch_fed else app.topic
        return make(
            name,
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
