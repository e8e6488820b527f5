"""Fetching the topics whose records wait seconds by design (retry tiers, scheduler tiers) less often than the
hot ones. aiokafka asks a broker for every fetchable partition it is assigned in one request, as often as the
fetch wait lets it; on the embedded broker the cost of a request grows with its partitions, and a worker's
retry and scheduler tiers are about 60% of them (112 of 185 partitions at 8 per topic). Measured on an idle
worker: its fetches cost it and the broker about 0.2 and 0.3 of a core at a 10 ms wait, and each round trip
lengthened every hot hop.

Leaving a partition out of a request changes nothing else: its position stays where the last record handed
over left it, and what it holds is fetched with the next request that includes it.

Also here, as it wraps the same step of aiokafka's fetcher: `wake_after_reaped_fetches`, the mend of a race in
aiokafka's fetch routine that the schedule's short waits made frequent; and `FetchPace`, the fetch wait a
consumer's rate asks for."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.protocol.fetch import FetchRequest

NodeRequests = list[tuple[int, FetchRequest]]

# A consumer fetches with its busy wait (see `FetchPace`) after a second in which it handed over this many
# records a second or more.
BUSY_RECORDS_PER_SECOND = 2_000


class FetchPace:
    """A consumer's fetch wait: short while records trickle in, long while it is busy and while it is idle,
    from the records it handed over in the last second. Used by the gateway's feed reader. (Not by the worker:
    a worker slower than its input hands over only what it can process, so its rate does not say it is
    behind; bench/RESULTS.md, twelfth session. The worker has its own idle wait.)

    The embedded broker holds a fetch for about half its wait even when records are waiting. A short wait
    keeps a quiet hop's latency low, but at thousands of records a second it makes a fetch request every few
    ms, and the broker, on the same cores, falls behind: the gateway's feed at 10,000 records/s and a 10 ms
    wait had records 200-300 ms old when fetched (bench/RESULTS.md, twelfth session). A broker that answers as
    soon as records are there (Apache Kafka) returns a busy consumer's fetches at once whatever the wait, so
    the long wait costs nothing there.

    Idle (a second without a record), a short wait only makes the broker answer empty fetches: on the
    embedded broker an idle gateway's 10 ms fetches cost it and the broker about 0.13 of a core (thirteenth
    session). The first record handed over ends the idle wait at once."""

    def __init__(
        self, quiet_ms: int, busy_ms: int, idle_ms: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.quiet_ms = quiet_ms
        self.busy_ms = max(quiet_ms, busy_ms)
        self.idle_ms = max(quiet_ms, idle_ms)
        self.wait_ms = quiet_ms
        self._idle = False
        self._clock = clock
        self._since = clock()
        self._records = 0

    def handed_over(self, records: int) -> int:
        """Count what one fetch hand-over gave; once a second has passed, set `wait_ms` from the rate in it.
        Returns `wait_ms`."""
        self._records += records
        if records and self._idle:
            self._idle = False
            self.wait_ms = self.quiet_ms  # the busy wait, if it is due, comes with the second's count
        now = self._clock()
        elapsed = now - self._since
        if elapsed >= 1.0:
            self._idle = not self._records
            if self._idle:
                self.wait_ms = self.idle_ms
            elif self._records / elapsed >= BUSY_RECORDS_PER_SECOND:
                self.wait_ms = self.busy_ms
            else:
                self.wait_ms = self.quiet_ms
            self._since, self._records = now, 0
        return self.wait_ms


class DelayedTopics:
    """Decides, for each round of fetch requests, whether the delayed topics' partitions go in it: once every
    `interval` seconds, counted from the last request that carried them."""

    def __init__(
        self, topics: frozenset[str], interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.topics = topics
        self.interval = interval
        self._clock = clock
        self._due = 0.0

    def schedule(
        self, requests: Sequence[tuple[int, FetchRequest]], timeout: float
    ) -> tuple[NodeRequests, float]:
        """The requests to send now, and how long the fetcher may wait before it asks again (no longer than
        until the delayed topics are due)."""
        now = self._clock()
        if now >= self._due:
            if any(topic in self.topics for _, request in requests for topic, _ in request.topics):
                self._due = now + self.interval
            return list(requests), timeout
        kept: NodeRequests = []
        for node_id, request in requests:
            topics = [(topic, parts) for topic, parts in request.topics if topic not in self.topics]
            if len(topics) == len(request.topics):
                kept.append((node_id, request))
            elif topics:
                kept.append((node_id, _with_topics(request, topics)))
        return kept, min(timeout, self._due - now)

    def install(self, fetcher: Any) -> None:
        """Put the schedule between aiokafka's fetcher and the requests it builds (its fetch routine calls
        `Fetcher._get_actions_per_node` for each round)."""
        build = fetcher._get_actions_per_node

        def actions(assignment: Any) -> tuple[Any, ...]:
            requests, resets, timeout, invalid_metadata, resumes = build(assignment)
            requests, timeout = self.schedule(requests, timeout)
            return requests, resets, timeout, invalid_metadata, resumes

        fetcher._get_actions_per_node = actions


def wake_after_reaped_fetches(fetcher: Any) -> None:
    """Mend a race in aiokafka's fetch routine that held every fetch back for its full wait (200 ms).

    The routine waits for its fetch tasks or a timeout. When the timeout fires in the same loop turn a fetch
    task finishes, the routine reaps the finished task at once, but the task's done-callback that frees its
    broker (`_in_flight`) is still queued: the next round sees the broker busy, sends nothing, and waits
    `fetcher_timeout` with no task left to wake it. The delayed topics' schedule shortens the routine's
    timeouts, so this happened often enough to be the in-app hop's p99 (bench/RESULTS.md, eleventh session:
    in-app records handed over 80-215 ms late). When a round sends nothing while a broker counts as busy
    with no fetch task left, the routine waits 0 s instead: one turn of the loop, which runs that callback."""
    build = fetcher._get_actions_per_node

    def actions(assignment: Any) -> tuple[Any, ...]:
        requests, resets, timeout, invalid_metadata, resumes = build(assignment)
        if not requests and fetcher._in_flight and not fetcher._pending_tasks:
            timeout = 0
        return requests, resets, timeout, invalid_metadata, resumes

    fetcher._get_actions_per_node = actions


def _with_topics(request: FetchRequest, topics: list[tuple[str, list[tuple[int, int, int]]]]) -> FetchRequest:
    return FetchRequest(
        request._max_wait_ms,
        request._min_bytes,
        request._max_bytes,
        request._isolation_level,
        topics,
        rack_id=request._rack_id,
    )
