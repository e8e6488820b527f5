"""Creating Herald's topics before anything produces to them, and refusing to start on mismatched ones.

A broker that auto-creates topics would give them its own default partition count; the users topic and the
routed events must have the same count, or a profile and its user's events meet on different workers."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from adapters.broker.topics import ensure_topics
from kernel.errors import ConfigurationError
from kernel.settings import Settings
from kernel.topics import TopicNames


async def partition_counts(bootstrap: list[str], names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {str(topic["topic"]): len(topic["partitions"]) for topic in described}


async def provision_topics(settings: Settings) -> None:
    names = TopicNames.from_settings(settings)
    await ensure_topics(
        settings.bootstrap_servers,
        list(names.provisioned()),
        settings.partitions,
        settings.replication_factor,
        compacted=names.compacted,
    )
    # One partition: the rules are one document, and every worker reads all of it.
    await ensure_topics(
        settings.bootstrap_servers, [names.rules], 1, settings.replication_factor, compacted={names.rules}
    )
    counts = await partition_counts(settings.bootstrap_servers, list(names.copartitioned))
    wrong = {name: n for name, n in counts.items() if n != settings.partitions}
    if wrong:
        found = ", ".join(f"{name} has {n}" for name, n in sorted(wrong.items()))
        raise ConfigurationError(
            f"HERALD_PARTITIONS is {settings.partitions} but {found}: the users, preferences and routed "
            "topics must have exactly that many partitions so each user's state and events meet on one worker"
        )
