"""The SMS provider interface: `send` one text message, returning the provider's message id or raising a
Herald error; `aclose` to release connections."""

from __future__ import annotations

from typing import Protocol

from adapters.sender import Sender
from schemas.notifications import SmsNotification


class SmsSender(Sender[SmsNotification], Protocol):
    """An SMS provider (`adapters/sms/<provider>.py`), built by its `from_settings`."""
