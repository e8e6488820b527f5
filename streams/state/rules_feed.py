"""Rules as data: every worker reads the whole compacted rules topic and routes with the newest valid
ruleset, so `herald rules apply` takes effect for the next event without a restart."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from adapters.broker.offsets import end_offsets
from streams.routing.rules import RuleBook

log = logging.getLogger("herald.rules")

RULESET_KEY = b"ruleset"


class RuleSource:
    """The ruleset in force. Starts with the rules file and follows the rules topic from then on."""

    def __init__(
        self,
        initial: RuleBook,
        validate: Callable[[RuleBook], None],
        on_change: Callable[[int | None, bool], None] = lambda offset, accepted: None,
    ) -> None:
        self.book = initial
        self._validate = validate
        self._on_change = on_change
        self.version: int | None = None  # offset of the record in force; None: the rules file

    def offer(self, raw: bytes, offset: int) -> bool:
        """Take a published ruleset if it is valid here (its templates exist); keep the current one if not."""
        try:
            book = RuleBook.from_json(raw)
            self._validate(book)
        except (ValidationError, ValueError) as exc:
            log.error("rules at offset %d refused, keeping the rules in force: %s", offset, exc)
            self._on_change(offset, False)
            return False
        self.book = book
        self.version = offset
        self._on_change(offset, True)
        log.info("rules at offset %d in force: %d rule(s)", offset, len(book.rules))
        return True


async def read_published(bootstrap: list[str], topic: str) -> tuple[bytes, int] | None:
    """The newest ruleset on the rules topic and its offset, or None if none was ever published."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await end_offsets(consumer, bootstrap, [partition]))[partition]
        newest: tuple[bytes, int] | None = None
        position = 0
        while position < end:
            batch = await consumer.getmany(partition, timeout_ms=1000)
            for record in batch.get(partition, []):
                position = record.offset + 1
                if record.key == RULESET_KEY and record.value is not None:
                    newest = (record.value, record.offset)
        return newest
    finally:
        await consumer.stop()
