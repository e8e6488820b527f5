"""The email provider interface: one `send`, returning the provider's message id or raising a Herald error."""

from __future__ import annotations

from typing import Protocol

from schemas.notifications import EmailNotification


class EmailSender(Protocol):
    name: str

    async def send(self, message: EmailNotification) -> str | None:
        """Deliver one email; return the provider's message id if it gives one.

        Raises `PermanentDeliveryError` or `RetriableDeliveryError` (kernel.errors), never SDK errors."""
        ...
