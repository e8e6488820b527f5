"""The shape every one-message provider shares: a name, a `send` returning the provider's id, an `aclose`.
`EmailSender` and `SmsSender` fix its message type; the failover chain is written against it once."""

from __future__ import annotations

from typing import Protocol, TypeVar

M = TypeVar("M", contravariant=True)


class Sender(Protocol[M]):
    name: str  # the provider's name in settings (HERALD_<CHANNEL>_PROVIDERS) and in metrics

    async def send(self, message: M) -> str | None:
        """Deliver one message; return the provider's message id if it gives one.

        Raises `PermanentDeliveryError` or `RetriableDeliveryError` (kernel.errors), never SDK errors."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds (connections, pools, SDK apps); it sends nothing afterwards."""
        ...
