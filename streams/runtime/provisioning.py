"""Creating Herald's topics before anything produces to them, and refusing to start on mismatched ones.

A broker that auto-creates topics would give them its own default partition count; the users topic and the
routed events must have the same count, or a profile and its user's events meet on different workers."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from adapters.broker.topics import ensure_topics
from kernel.errors import ConfigurationError, TopicCreationError
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
    await ensure_retained_topic(
        settings, names.preferences_history, settings.preferences_history_retention_seconds
    )
    await ensure_retained_topic(settings, names.inbox_feed, settings.inbox_feed_retention_seconds)
    counts = await partition_counts(settings.bootstrap_servers, list(names.copartitioned))
    wrong = {name: n for name, n in counts.items() if n != settings.partitions}
    if wrong:
        found = ", ".join(f"{name} has {n}" for name, n in sorted(wrong.items()))
        raise ConfigurationError(
            f"HERALD_PARTITIONS is {settings.partitions} but {found}: the users, preferences, routed, in-app "
            "and inbox command topics must have exactly that many partitions so each user's state and events "
            "meet on one worker"
        )


async def ensure_retained_topic(settings: Settings, name: str, retention_seconds: float) -> None:
    """A topic whose records are deleted by age, never compacted (the preferences history, the inbox feed).
    Created if missing; an existing topic is left as it is."""
    configs = {"cleanup.policy": "delete", "retention.ms": str(int(retention_seconds * 1000))}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await admin.start()
        if name in set(await admin.list_topics()):
            return
        response = await admin.create_topics(
            [NewTopic(name, settings.partitions, settings.replication_factor, topic_configs=configs)]
        )
    except KafkaError as exc:
        raise TopicCreationError(f"cannot create {name}: {exc}", retriable=bool(exc.retriable)) from exc
    finally:
        await admin.close()
    # Another process may have created it meanwhile: that is success too.
    for entry in response.topic_errors:
        if entry[1] not in (0, TopicAlreadyExistsError.errno):
            error = for_code(entry[1])
            raise TopicCreationError(
                f"the broker refused to create {name}: {error.__name__}", retriable=error.retriable
            )
