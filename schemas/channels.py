"""The delivery channels Herald knows."""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    INAPP = "inapp"
    EMAIL = "email"
    PUSH = "push"
    SMS = "sms"
