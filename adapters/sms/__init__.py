"""The SMS provider interface: one `send`, returning the provider's message id or raising a Herald error."""

from __future__ import annotations

from typing import Protocol

from schemas.notifications import SmsNotification


class SmsSender(Protocol):
    name: str

    async def send(self, message: SmsNotification) -> str | None:
        """Deliver one text message; return the provider's message id if it gives one.

        Raises `PermanentDeliveryError` or `RetriableDeliveryError` (kernel.errors), never SDK errors."""
        ...
