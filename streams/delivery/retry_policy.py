"""When and where a failed notification is tried again: exponential backoff with jitter over retry tiers.

Each tier is its own topic with its own delay (as in Spring Kafka's retry topics and Uber's reliable
reprocessing), so a notification waiting for its retry never blocks the partitions of fresh ones."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    base_delay_seconds: float = 2.0
    multiplier: float = 4.0
    max_delay_seconds: float = 600.0
    jitter: float = 0.2  # ± this fraction of the delay, so retries of one outage do not arrive together
    max_attempts: int = 5  # attempts in all, the first included
    tiers: int = 3  # retry topics; attempts past the last tier wait on the last one

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.tiers < 1 or self.base_delay_seconds < 0 or not 0 <= self.jitter < 1:
            raise ValueError("invalid retry policy")

    def exhausted(self, attempt: int) -> bool:
        """After `attempt` attempts failed, may another be made?"""
        return attempt >= self.max_attempts

    def tier_for(self, next_attempt: int) -> int:
        """The retry tier (1-based) that holds the `next_attempt`-th attempt (2 is the first retry)."""
        return min(max(next_attempt - 1, 1), self.tiers)

    def delay(
        self,
        failed_attempt: int,
        *,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after attempt `failed_attempt` failed; a provider's Retry-After is a floor."""
        raw = min(self.base_delay_seconds * self.multiplier ** (failed_attempt - 1), self.max_delay_seconds)
        jittered = raw * (1 + self.jitter * (2 * rand() - 1))
        return max(jittered, retry_after or 0.0)

    def not_before(self, now: datetime, failed_attempt: int, *, retry_after: float | None = None) -> datetime:
        return now + timedelta(seconds=self.delay(failed_attempt, retry_after=retry_after))
