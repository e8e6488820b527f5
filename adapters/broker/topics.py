"""Creating Herald's topics: the missing ones are made, the existing ones are left exactly as they are."""

from __future__ import annotations

import re
from collections.abc import Set

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from kernel.errors import TopicCreationError

# Kafka's own rule; Tansu accepts any name, so checking here keeps both brokers alike.
_LEGAL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


async def ensure_topics(
    bootstrap: list[str],
    names: list[str],
    partitions: int,
    replication_factor: int,
    compacted: Set[str] = frozenset(),
) -> None:
    """Create each missing topic in `names`; those in `compacted` get `cleanup.policy=compact`.

    An existing topic is not altered, even if its partition count or configuration differ.
    """
    _check_request(names, partitions, replication_factor)
    if not names:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        if not missing:
            return
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    partitions,
                    replication_factor,
                    topic_configs={"cleanup.policy": "compact"} if name in compacted else {},
                )
                for name in missing
            ]
        )
    except KafkaError as exc:
        raise TopicCreationError(
            f"cannot create topics on {','.join(bootstrap)}: {exc}", retriable=bool(exc.retriable)
        ) from exc
    finally:
        await admin.close()
    _raise_refusals(response.topic_errors)


def _check_request(names: list[str], partitions: int, replication_factor: int) -> None:
    # Tansu creates topics with zero partitions or an impossible replication factor without complaint.
    if partitions < 1:
        raise TopicCreationError(f"partitions must be at least 1, not {partitions}")
    if replication_factor < 1:
        raise TopicCreationError(f"replication_factor must be at least 1, not {replication_factor}")
    illegal = [name for name in names if not _LEGAL_NAME.match(name)]
    if illegal:
        raise TopicCreationError(f"illegal topic names {illegal}: use 1-249 of A-Z a-z 0-9 . _ -")


def _raise_refusals(topic_errors: list[tuple[object, ...]]) -> None:
    # Entries are (name, code) in version 0 of the response and (name, code, message) from version 1 on.
    # Another worker may create the same topic between our listing and our request: that is success too.
    refusals = [
        (entry[0], for_code(entry[1]), entry[2] if len(entry) > 2 else None)
        for entry in topic_errors
        if entry[1] not in (0, TopicAlreadyExistsError.errno)
    ]
    if refusals:
        detail = "; ".join(
            f"{name}: {error.__name__} {message or ''}".rstrip() for name, error, message in refusals
        )
        raise TopicCreationError(
            f"the broker refused to create topics: {detail}",
            retriable=all(error.retriable for _, error, _ in refusals),
        )
