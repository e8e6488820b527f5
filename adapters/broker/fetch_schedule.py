"""Fetching the topics whose records wait seconds by design (retry tiers, scheduler tiers) less often than the
hot ones. aiokafka asks a broker for every fetchable partition it is assigned in one request, as often as the
fetch wait lets it; on the embedded broker the cost of a request grows with its partitions, and a worker's
retry and scheduler tiers are about 60% of them (112 of 185 partitions at 8 per topic). Measured on an idle
worker: its fetches cost it and the broker about 0.2 and 0.3 of a core at a 10 ms wait, and each round trip
lengthened every hot hop.

Leaving a partition out of a request changes nothing else: its position stays where the last record handed
over left it, and what it holds is fetched with the next request that includes it.

Also here, as it wraps the same step of aiokafka's fetcher: `wake_after_reaped_fetches`, the mend of a race in
aiokafka's fetch routine that the schedule's short waits made frequent."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.protocol.fetch import FetchRequest

NodeRequests = list[tuple[int, FetchRequest]]


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
