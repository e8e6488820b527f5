"""User profiles, published to the compacted `herald.users` topic keyed by user id."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from schemas.base import WireModel
from schemas.events import UserId

Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)]
# E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
Phone = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$")]
DeviceToken = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\s]+$")]


class Platform(StrEnum):
    ANDROID = "android"
    IOS = "ios"
    WEB = "web"


class TokenKind(StrEnum):
    FCM_TOKEN = "fcm_token"  # an FCM registration token
    FCM_FID = "fcm_fid"  # a Firebase installation id
    APNS = "apns"  # an APNs device token, for direct APNs


class Device(WireModel):
    """A push target: the token a push service gave the app on one device."""

    token: DeviceToken
    platform: Platform
    kind: TokenKind = TokenKind.FCM_TOKEN


class UserProfile(WireModel):
    user_id: UserId
    email: Email | None = None
    phone: Phone | None = None
    devices: Annotated[list[Device], Field(max_length=50)] = Field(default_factory=list)
    locale: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")] = "en"
    timezone: str = "UTC"
    inapp_enabled: bool = True
    display_name: Annotated[str, Field(max_length=200)] | None = None
