"""The email provider interface: `send` one email, returning the provider's message id or raising a Herald
error; `aclose` to release connections."""

from __future__ import annotations

from typing import Protocol

from adapters.sender import Sender
from schemas.notifications import EmailNotification


class EmailSender(Sender[EmailNotification], Protocol):
    """An email provider (`adapters/email/<provider>.py`), built by its `from_settings`."""
