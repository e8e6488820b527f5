"""User profiles, published to the compacted `herald.users` topic keyed by user id."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field, StringConstraints, ValidationInfo

from schemas.base import WireModel
from schemas.events import UserId

# The validation context under which a profile read back from Herald's own table is parsed. Every stored
# profile was built by `ProfileUpdate.apply_to`, which checked its address, number and timezone; checking
# them again on each read was about 40% of routing an event to a user not parsed yet (email-validator's
# IDNA checks and libphonenumber's parse). Types, lengths and patterns are still checked.
STORED: dict[str, bool] = {"stored": True}


def _checked_before(info: ValidationInfo) -> bool:
    return info.context is STORED


def _email(value: str, info: ValidationInfo) -> str:
    if _checked_before(info):
        return value
    try:
        # Syntax only: a deliverability check would make validation depend on DNS.
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None


def _phone(value: str, info: ValidationInfo) -> str:
    if _checked_before(info):
        return value
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number in E.164 form (+<country code><number>)") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number for its country")
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if formatted != value:
        # Not the number itself: validation messages reach dead letters, where personal data never goes.
        raise ValueError("must be written in E.164 form: + and digits only, no spaces or national prefix")
    return value


def _timezone(value: str, info: ValidationInfo) -> str:
    if _checked_before(info):
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA timezone name (e.g. Europe/Paris)") from None
    return value


Email = Annotated[str, StringConstraints(max_length=320), AfterValidator(_email)]
Phone = Annotated[str, StringConstraints(max_length=20), AfterValidator(_phone)]
Timezone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_timezone)]
Locale = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")]
DeviceToken = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\s]+$")]


class Platform(StrEnum):
    ANDROID = "android"
    IOS = "ios"
    WEB = "web"


class TokenKind(StrEnum):
    """What a device token is, which decides which push provider can address it and how. The values are the
    wire format of `Device.kind` (and the push adapters' token kinds): never change one."""

    # An FCM registration token (FCM v1 `token`, deprecated by the SDK): a kind of token, not a secret.
    FCM_TOKEN = "fcm_token"  # noqa: S105
    FCM_FID = "fcm_fid"  # a Firebase installation id (FCM v1 `fid`, the SDK's preferred target)
    APNS = "apns"  # an APNs device token (hex), for direct APNs


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
    locale: Locale = "en"
    timezone: Timezone = "UTC"
    inapp_enabled: bool = True
    display_name: Annotated[str, Field(max_length=200)] | None = None


class ProfileUpdate(WireModel):
    """What `herald.users` carries: a profile, whole or in part. Fields left out keep their stored value; a
    field sent as null is cleared. A user not known yet gets the defaults for what is left out."""

    user_id: UserId
    email: Email | None = None
    phone: Phone | None = None
    devices: Annotated[list[Device], Field(max_length=50)] | None = None
    locale: Locale | None = None
    timezone: Timezone | None = None
    inapp_enabled: bool | None = None
    display_name: Annotated[str, Field(max_length=200)] | None = None
    # A precondition, not a field of the profile: apply the update only if the stored email is still this
    # address, so a late bounce never removes an address the user has changed since.
    if_email: Email | None = None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True, exclude={"if_email"})

    @property
    def is_whole(self) -> bool:
        """Does it state every field (a whole profile, safe as the last record of a compacted key)?"""
        return self.if_email is None and set(UserProfile.model_fields) <= self.model_fields_set

    @classmethod
    def whole(cls, profile: UserProfile) -> ProfileUpdate:
        """The update that states all of `profile`, nulls included."""
        return cls.model_validate(profile.model_dump(mode="json"), strict=False)

    def holds_for(self, current: UserProfile | None) -> bool:
        """Whether the stored profile meets the update's precondition (an update without one always does)."""
        if self.if_email is None:
            return True
        stored = current.email if current is not None else None
        # Case-insensitively: providers report addresses lower-cased; a profile keeps the case it was given.
        return stored is not None and stored.casefold() == self.if_email.casefold()

    def to_json(self) -> bytes:
        # Unlike other records, nulls are meaningful here (they clear a field): keep what was set, as set.
        return self.model_dump_json(exclude_unset=True).encode()

    def apply_to(self, current: UserProfile | None) -> UserProfile:
        """Merge onto the stored profile; clearing a defaulted field restores its default."""
        base = current.model_dump(mode="json") if current is not None else {"user_id": self.user_id}
        merged = {**base, **self.changes()}
        for name, value in list(merged.items()):
            if value is None and UserProfile.model_fields[name].is_required() is False:
                default = UserProfile.model_fields[name].get_default(call_default_factory=True)
                merged[name] = default
        return UserProfile.model_validate(merged, strict=False)
