"""User profiles, published to the compacted `herald.users` topic keyed by user id."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from schemas.base import WireModel
from schemas.events import UserId

Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)]


class UserProfile(WireModel):
    user_id: UserId
    email: Email | None = None
    locale: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")] = "en"
    timezone: str = "UTC"
    inapp_enabled: bool = True
    display_name: Annotated[str, Field(max_length=200)] | None = None
