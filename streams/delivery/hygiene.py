"""Token hygiene: an address a provider reports as gone for good (an unregistered push token, an SMS number
that unsubscribed) is removed from the recipient's profile, so it is never tried again."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from kernel.errors import PermanentDeliveryError
from schemas.notifications import NotificationBase, PushNotification, SmsNotification
from schemas.reasons import DeliveryReason
from schemas.users import ProfileUpdate, UserProfile
from streams.delivery.answers import Answer

N = TypeVar("N", bound=NotificationBase)


@dataclass(frozen=True)
class Removal:
    """A partial profile update (only the field named changes when the directory merges it) and how many
    addresses it removes."""

    update: ProfileUpdate
    removed: int


# A channel's hygiene: from a notification, its providers' answer and the recipient's profile as stored now,
# the addresses to remove, if any.
Hygiene = Callable[[N, Answer, UserProfile | None], Removal | None]


def forget_devices(profile: UserProfile | None, tokens: Iterable[str]) -> Removal | None:
    gone = set(tokens)
    if profile is None or not gone:
        return None
    kept = [device for device in profile.devices if device.token not in gone]
    removed = len(profile.devices) - len(kept)
    if not removed:
        return None
    return Removal(ProfileUpdate(user_id=profile.user_id, devices=kept), removed)


def forget_phone(profile: UserProfile | None, phone: str) -> Removal | None:
    """Only if the profile still has this number: the user may have given a new one since it was sent."""
    if profile is None or profile.phone != phone:
        return None
    return Removal(ProfileUpdate(user_id=profile.user_id, phone=None), 1)


def push_hygiene(
    notification: PushNotification, answer: Answer, profile: UserProfile | None
) -> Removal | None:
    # Whatever the outcome: a token can be gone while the user's other devices were reached.
    return forget_devices(profile, answer.gone_tokens)


def sms_hygiene(notification: SmsNotification, answer: Answer, profile: UserProfile | None) -> Removal | None:
    # A number that opted out (Twilio 21610) must not be texted again, whatever rule asks for it.
    refused = answer.outcome
    if isinstance(refused, PermanentDeliveryError) and refused.reason == DeliveryReason.UNSUBSCRIBED:
        return forget_phone(profile, notification.to)
    return None
