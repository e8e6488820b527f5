"""Creating Herald's topics before anything produces to them, and refusing to start on mismatched ones.

A broker that auto-creates topics would give them its own default partition count; the users topic and the
routed events must have the same count, or a profile and its user's events meet on different workers."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from adapters.broker.topics import ensure_topics
from streams.naming import retry_topic_name
from streams.scheduler import tier_topic_names
from streams.settings import ConfigurationError, Settings


def retry_topic_names(settings: Settings) -> list[str]:
    return [
        retry_topic_name(settings.delivery_topics[channel], tier)
        for channel in ("email", "push", "sms")
        for tier in range(1, settings.retry_tiers + 1)
    ]


def topic_names(settings: Settings) -> list[str]:
    return [
        settings.topic_events,
        settings.topic_users,
        settings.topic_preferences,
        settings.topic_routed,
        *settings.delivery_topics.values(),
        *retry_topic_names(settings),
        *tier_topic_names(settings.topic_scheduled_prefix),
        settings.topic_status,
        settings.topic_dlq,
    ]


async def partition_counts(bootstrap: list[str], names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {str(topic["topic"]): len(topic["partitions"]) for topic in described}


async def provision_topics(settings: Settings) -> None:
    await ensure_topics(
        settings.bootstrap_servers,
        topic_names(settings),
        settings.partitions,
        settings.replication_factor,
        compacted={settings.topic_users, settings.topic_preferences},
    )
    # One partition: the rules are one document, and every worker reads all of it.
    await ensure_topics(
        settings.bootstrap_servers,
        [settings.topic_rules],
        1,
        settings.replication_factor,
        compacted={settings.topic_rules},
    )
    copartitioned = [settings.topic_users, settings.topic_preferences, settings.topic_routed]
    counts = await partition_counts(settings.bootstrap_servers, copartitioned)
    wrong = {name: n for name, n in counts.items() if n != settings.partitions}
    if wrong:
        found = ", ".join(f"{name} has {n}" for name, n in sorted(wrong.items()))
        raise ConfigurationError(
            f"HERALD_PARTITIONS is {settings.partitions} but {found}: the users, preferences and routed "
            "topics must have exactly that many partitions so each user's state and events meet on one worker"
        )
