from __future__ import annotations

from schemas.users import Device, Platform, TokenKind
from streams.delivery.push_targets import plan_push

FCM = ("fcm", frozenset({TokenKind.FCM_TOKEN, TokenKind.FCM_FID}))
APNS = ("apns", frozenset({TokenKind.APNS}))

android = Device(token="a1", platform=Platform.ANDROID)
iphone_fcm = Device(token="i1", platform=Platform.IOS)
iphone_apns = Device(token="i1-apns", platform=Platform.IOS, kind=TokenKind.APNS)


def test_each_device_goes_to_the_first_capable_provider() -> None:
    plan = plan_push([android, iphone_fcm], [FCM, APNS], lambda name: True)
    assert plan.batches == {"fcm": [android, iphone_fcm]}
    assert not plan.standby and not plan.unsupported


def test_apns_token_stands_by_while_fcm_tries_ios() -> None:
    plan = plan_push([android, iphone_fcm, iphone_apns], [FCM, APNS], lambda name: True)
    assert plan.batches == {"fcm": [android, iphone_fcm]}
    assert plan.standby == [iphone_apns]
    assert (plan.standby_provider, plan.standing_in_for) == ("apns", "fcm")


def test_apns_only_ios_goes_straight_to_apns() -> None:
    plan = plan_push([android, iphone_apns], [FCM, APNS], lambda name: True)
    assert plan.batches == {"fcm": [android], "apns": [iphone_apns]}


def test_unsupported_and_cooling() -> None:
    plan = plan_push([iphone_apns], [FCM], lambda name: True)
    assert plan.unsupported == [iphone_apns]
    plan = plan_push([android], [FCM, APNS], lambda name: name != "fcm")
    assert plan.cooling == [android]


def test_each_breaker_is_asked_once() -> None:
    asked: list[str] = []

    def usable(name: str) -> bool:
        asked.append(name)
        return True

    plan_push([android, iphone_fcm, Device(token="a2", platform=Platform.ANDROID)], [FCM, APNS], usable)
    assert asked == ["fcm"]
