"""What a channel's providers answered for one notification, as data for the delivery step: every attempt, how
it ended (sent, or the error that stopped it), and the push tokens a provider reported gone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from kernel.errors import DeliveryError
from schemas.notifications import NotificationBase
from streams.delivery.failover import Attempt, Sent

N = TypeVar("N", bound=NotificationBase)


@dataclass(frozen=True)
class Answer:
    attempts: tuple[Attempt, ...]  # in the order they were made
    outcome: Sent | DeliveryError
    gone_tokens: tuple[str, ...] = ()  # push tokens a provider called unregistered or invalid


# How the delivery agents reach a channel's providers: one call per notification (see `channels`).
Send = Callable[[N], Awaitable[Answer]]

# How a failover chain (`ProviderChain.send`, `PushChannel.send`) is called: it reports each attempt as it
# ends and returns the provider that accepted, or raises the error that stopped it.
ReportAttempt = Callable[[Attempt], Awaitable[None]]
Chain = Callable[[N, ReportAttempt], Awaitable[Sent]]


async def ask(chain: Chain[N], notification: N) -> Answer:
    """Send through `chain`; a provider's refusal or failure becomes the answer's outcome, not an exception.
    Anything else it raises (a bug) propagates."""
    attempts: list[Attempt] = []

    async def report(attempt: Attempt) -> None:
        attempts.append(attempt)

    try:
        sent = await chain(notification, report)
    except DeliveryError as exc:
        return Answer(tuple(attempts), exc)
    return Answer(tuple(attempts), sent)
