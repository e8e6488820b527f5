"""The worker's composition root: every dependency an agent needs, built in one place from the settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from schemas.base import WireModel
from schemas.channels import Channel
from schemas.status import DeliveryStatus
from streams.deadletters import dead_letter
from streams.metrics import WorkerMetrics
from streams.rendering import TemplateStore
from streams.rules_feed import RuleSource
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger("herald.worker")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class WorkerContext:
    settings: Settings
    app: faust.App
    topics: Topics
    metrics: WorkerMetrics
    rules: RuleSource
    templates: TemplateStore
    users: Any  # faust Table: user id -> profile dict
    preferences: Any  # faust Table: user id -> preferences dict
    delivered: Any  # faust Table: recipient -> {notification id: when delivered (epoch seconds)}
    digests: Any  # faust Table: recipient -> {bucket: {rule, due, count, events}}
    throttles: Any  # faust Table: recipient -> {scope key: [send times (epoch seconds)]}
    clock: Callable[[], datetime] = utc_now
    scheduler: Any = None  # streams.scheduler.Scheduler, set once the context exists

    def topic(self, name: str) -> Any:
        """A topic declared like Herald's others: raw bytes, the configured partitions."""
        return self.app.topic(
            name,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.settings.partitions,
            replicas=self.settings.replication_factor,
        )

    async def send(self, topic: Any, key: str, value: WireModel) -> None:
        await topic.send(key=key.encode(), value=value.to_json())

    async def send_status(self, status: DeliveryStatus) -> None:
        await self.send(self.topics.status, status.recipient, status)

    async def to_dead_letters(self, message: Any, error: BaseException, stage: str) -> None:
        """Park a message that cannot be processed on the DLQ, with the reason, and count it."""
        record = dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            error=error,
            stage=stage,
        )
        await self.topics.dlq.send(key=message.key, value=record.to_json())
        self.metrics.dead_letters.labels(stage=stage, reason=record.reason).inc()
        log.warning(
            "dead-lettered",
            extra={
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "stage": stage,
                "reason": record.reason,
                "error_class": record.error_class,
            },
        )

    def channel_topic(self, channel: Channel) -> Any:
        return self.topics.delivery[channel]
