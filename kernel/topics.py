"""Every topic and changelog name Herald uses, derived from the settings in one place, so producers,
consumers and provisioning agree (renaming any of them orphans the state behind it)."""

from __future__ import annotations

from dataclasses import dataclass

from kernel.settings import Settings
from schemas.channels import Channel

# The scheduler's fixed delays: every record of a tier waits the same time (see streams.scheduling).
SCHEDULER_TIERS_SECONDS = (1, 5, 30, 300, 3600)

# Channels with provider delivery, and so retry topics; in-app is kept in the worker's inbox table.
RETRYING_CHANNELS = (Channel.EMAIL, Channel.PUSH, Channel.SMS)

# The worker's Faust tables, by name; each has a compacted changelog `<app id>-<name>-changelog`.
TABLES = ("users", "preferences", "delivered", "digests", "throttles", "inbox")


def retry_topic_name(base: str, tier: int) -> str:
    """`herald.deliver.email` → `herald.deliver.email.retry.1`."""
    return f"{base}.retry.{tier}"


def tier_topic_name(prefix: str, tier_seconds: int) -> str:
    """`herald.scheduled` → `herald.scheduled.30s`."""
    return f"{prefix}.{tier_seconds}s"


def changelog_topic_name(app_id: str, table: str) -> str:
    """Faust's own naming for a table's changelog, spelled out so the bench and the tests can read it."""
    return f"{app_id}-{table}-changelog"


@dataclass(frozen=True)
class TopicNames:
    events: str
    users: str
    preferences: str
    preferences_history: str
    rules: str
    routed: str
    delivery: dict[Channel, str]
    retries: dict[Channel, tuple[str, ...]]
    scheduled: dict[int, str]
    status: str
    dlq: str
    inbox_commands: str
    inbox_feed: str
    changelogs: dict[str, str]

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        delivery = {Channel(channel): name for channel, name in settings.delivery_topics.items()}
        return cls(
            events=settings.topic_events,
            users=settings.topic_users,
            preferences=settings.topic_preferences,
            preferences_history=settings.topic_preferences_history,
            rules=settings.topic_rules,
            routed=settings.topic_routed,
            delivery=delivery,
            retries={
                channel: tuple(
                    retry_topic_name(delivery[channel], tier) for tier in range(1, settings.retry_tiers + 1)
                )
                for channel in RETRYING_CHANNELS
            },
            scheduled={
                tier: tier_topic_name(settings.topic_scheduled_prefix, tier)
                for tier in SCHEDULER_TIERS_SECONDS
            },
            status=settings.topic_status,
            dlq=settings.topic_dlq,
            inbox_commands=settings.inbox_commands_topic,
            inbox_feed=settings.inbox_feed_topic,
            changelogs={table: changelog_topic_name(settings.app_id, table) for table in TABLES},
        )

    @property
    def compacted(self) -> frozenset[str]:
        """Topics that hold the latest record per key (state), not a stream of records."""
        return frozenset({self.users, self.preferences, self.rules})

    @property
    def batch_fed(self) -> frozenset[str]:
        """The hot path's topics, whose agents take a whole fetched batch per partition at a time: events,
        routed, the fresh delivery topics and the inbox's commands."""
        return frozenset({self.events, self.routed, *self.delivery.values(), self.inbox_commands})

    @property
    def delayed(self) -> frozenset[str]:
        """Topics whose records wait seconds by design before they are acted on: the delivery retry tiers and
        the scheduler's tiers. Fetched every HERALD_DELAYED_FETCH_INTERVAL_MS, not with every fetch."""
        return frozenset(
            {*(name for tiers in self.retries.values() for name in tiers), *self.scheduled.values()}
        )

    @property
    def copartitioned(self) -> tuple[str, ...]:
        """Topics whose partition counts must match, so a user's state and events meet on one worker."""
        return (self.users, self.preferences, self.routed, self.delivery[Channel.INAPP], self.inbox_commands)

    def provisioned(self) -> tuple[str, ...]:
        """Every topic Herald creates before anything produces (Faust creates the changelogs itself), with
        the configured partitions; the rules topic (one partition), the preferences history and the inbox
        feed (their own retention) are created apart (see provisioning)."""
        return (
            self.events,
            self.users,
            self.preferences,
            self.routed,
            *self.delivery.values(),
            *(name for names in self.retries.values() for name in names),
            *self.scheduled.values(),
            self.status,
            self.dlq,
            self.inbox_commands,
        )
