from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from schemas.channels import Channel
from schemas.events import DomainEvent
from schemas.notifications import EmailNotification, InAppNotification, notification_id
from schemas.users import UserProfile
from streams.routing.planning import plan_notifications
from streams.routing.rendering import TemplateStore
from streams.routing.rules import RuleBook
from tests.unit.test_control_chars import control_characters

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def event(**overrides: object) -> DomainEvent:
    fields: dict[str, object] = {
        "event_id": "e1",
        "type": "order.shipped",
        "occurred_at": datetime(2026, 11, 24, 11, 0, tzinfo=UTC),
        "recipients": ["alice"],
        "data": {"order_id": "A-1", "carrier": "DHL", "items": ["Kettle"]},
    }
    fields.update(overrides)
    return DomainEvent.model_validate(fields)


def plan_for(profile: UserProfile, ev: DomainEvent | None = None):  # type: ignore[no-untyped-def]
    ev = ev or event()
    book = RuleBook.from_file(EXAMPLES / "rules.yaml")
    return plan_notifications(ev, profile, book.match(ev.type), TemplateStore(EXAMPLES / "templates"), NOW)


def test_renders_one_notification_per_channel() -> None:
    plan = plan_for(UserProfile(user_id="alice", email="alice@example.com", display_name="Alice"))
    by_channel = {n.channel: n for n in plan.notifications}
    assert set(by_channel) == {Channel.INAPP, Channel.EMAIL}
    inapp = by_channel[Channel.INAPP]
    email = by_channel[Channel.EMAIL]
    assert isinstance(inapp, InAppNotification) and isinstance(email, EmailNotification)
    assert inapp.title == "Your order A-1 has shipped"
    assert inapp.action_url == "https://shop.example.com/orders/A-1"
    assert email.to == "alice@example.com"
    assert "Hello Alice" in email.text and "- Kettle" in email.text
    assert email.html is not None and "<b>A-1</b>" in email.html
    assert inapp.recipient == email.recipient == "alice"
    assert email.created_at == NOW
    assert not plan.skipped and not plan.failed


def test_locale_from_profile() -> None:
    plan = plan_for(UserProfile(user_id="bob", email="bob@example.com", locale="fr-CA"))
    email = next(n for n in plan.notifications if isinstance(n, EmailNotification))
    assert email.subject == "Votre commande A-1 est expédiée"


def test_channel_without_address_is_skipped_with_reason() -> None:
    plan = plan_for(UserProfile(user_id="carol"))
    assert [n.channel for n in plan.notifications] == [Channel.INAPP]
    assert [(s.channel, s.reason) for s in plan.skipped] == [(Channel.EMAIL, "no_address")]


def test_missing_variable_fails_that_channel_only() -> None:
    ev = event(data={"order_id": "A-1"})  # no carrier, no items
    plan = plan_for(UserProfile(user_id="alice", email="alice@example.com"), ev)
    assert {f.channel for f in plan.failed} == {Channel.INAPP, Channel.EMAIL}
    assert all(f.error.reason == "template_error" for f in plan.failed)


def test_notification_ids_are_stable_and_distinct() -> None:
    a = notification_id("k", "alice", Channel.EMAIL)
    assert a == notification_id("k", "alice", Channel.EMAIL)
    assert a != notification_id("k", "alice", Channel.INAPP)
    assert a != notification_id("k", "bob", Channel.EMAIL)
    plan1 = plan_for(UserProfile(user_id="alice", email="a@example.com"), event(idempotency_key="same"))
    plan2 = plan_for(
        UserProfile(user_id="alice", email="a@example.com"), event(event_id="e2", idempotency_key="same")
    )
    assert [n.notification_id for n in plan1.notifications] == [
        n.notification_id for n in plan2.notifications
    ]


def test_fallback_picks_the_first_reachable_channel() -> None:
    from schemas.rules import Rule
    from streams.routing.rendering import TemplateStore as Store

    rule = Rule.model_validate(
        {
            "match": "security.login",
            "fallback": ["push", "sms", "email"],
            "channels": {c: {"template": "security_login"} for c in ("push", "sms", "email")},
        },
        strict=False,
    )
    store = Store(EXAMPLES / "templates")
    ev = event(type="security.login", data={"device": "Firefox", "city": "Lyon"})
    with_phone = UserProfile.model_validate(
        {"user_id": "a", "email": "a@example.com", "phone": "+33612345678"}, strict=False
    )
    plan = plan_notifications(ev, with_phone, rule, store, NOW)
    assert [n.channel for n in plan.notifications] == [Channel.SMS]  # no device: push is passed over
    assert {(s.channel, s.reason) for s in plan.skipped} == {
        (Channel.PUSH, "no_address"),
        (Channel.EMAIL, "fallback_not_needed"),
    }
    unreachable = plan_notifications(ev, UserProfile(user_id="b"), rule, store, NOW)
    assert not unreachable.notifications
    assert (Channel.EMAIL, "no_address") in {(s.channel, s.reason) for s in unreachable.skipped}


def test_preferences_and_quiet_hours_shape_the_plan() -> None:
    from schemas.preferences import Preferences
    from schemas.rules import Rule
    from streams.routing.rendering import TemplateStore as Store

    rule = Rule.model_validate(
        {
            "match": "security.login",
            "category": "account",
            "channels": {c: {"template": "security_login"} for c in ("push", "sms", "email")},
        },
        strict=False,
    )
    profile = UserProfile.model_validate(
        {
            "user_id": "a",
            "email": "a@example.com",
            "phone": "+33612345678",
            "timezone": "Europe/Paris",
            "devices": [{"token": "t1", "platform": "android"}],
        },
        strict=False,
    )
    # 23:30 in Paris on a Tuesday, inside tue 22:00-07:00; email opted out for the category.
    now = datetime(2026, 11, 24, 22, 30, tzinfo=UTC)
    prefs = Preferences.model_validate(
        {
            "user_id": "a",
            "categories": {"account": {"email": False}},
            "quiet_hours": {"tue": {"start": "22:00", "end": "07:00"}},
        },
        strict=False,
    )
    ev = event(type="security.login", data={"device": "Firefox", "city": "Lyon"})
    plan = plan_notifications(ev, profile, rule, Store(EXAMPLES / "templates"), now, prefs)
    assert not plan.notifications
    assert {d.notification.channel for d in plan.deferred} == {Channel.PUSH, Channel.SMS}
    assert all(d.until == datetime(2026, 11, 25, 6, 0, tzinfo=UTC) for d in plan.deferred)  # 07:00 Paris
    assert [(s.channel, s.reason) for s in plan.skipped] == [(Channel.EMAIL, "opted_out")]
    sms = next(d.notification for d in plan.deferred if d.notification.channel is Channel.SMS)
    assert getattr(sms, "segments", None) == 1


def _rule(**fields: object):  # type: ignore[no-untyped-def]
    from schemas.rules import Rule

    return Rule.model_validate(
        {"match": "order.shipped", "channels": {"inapp": {"template": "order_shipped"}}, **fields},
        strict=False,
    )


def test_an_inapp_notification_carries_only_the_fields_the_rule_makes_public() -> None:
    data = {
        "order_id": "A-1",
        "carrier": "DHL",
        "items": ["Kettle"],
        "internal_ref": "wh-7731",  # for templates and the producer's systems, not for the browser
        "price": {"amount": 42, "cost": 17},
        "tracking": {"url": "https://t.example/1", "token": "s3cr3t"},
    }
    store, alice = TemplateStore(EXAMPLES / "templates"), UserProfile(user_id="alice")
    rule = _rule(public=["order_id", "data.tracking.url", "price.amount", "not_there"])
    [inapp] = plan_notifications(event(data=data), alice, rule, store, NOW).notifications
    assert isinstance(inapp, InAppNotification)
    assert inapp.data == {
        "order_id": "A-1",
        "tracking": {"url": "https://t.example/1"},
        "price": {"amount": 42},
    }
    assert inapp.title == "Your order A-1 has shipped"  # templates still see the whole of the data
    # Without `public`, nothing of the event's data is forwarded.
    [bare] = plan_notifications(event(data=data), alice, _rule(), store, NOW).notifications
    assert isinstance(bare, InAppNotification) and bare.data == {}
    assert "wh-7731" not in bare.to_json().decode() and "s3cr3t" not in inapp.to_json().decode()


def test_the_example_rules_forward_the_order_id_the_docs_show() -> None:
    plan = plan_for(UserProfile(user_id="alice"))
    [inapp] = plan.notifications
    assert isinstance(inapp, InAppNotification) and inapp.data == {"order_id": "A-1"}


def test_control_characters_in_event_data_reach_no_subject_title_or_sms() -> None:
    from schemas.notifications import PushNotification, SmsNotification
    from schemas.rules import Rule

    rule = Rule.model_validate(
        {
            "match": "security.login",
            "critical": True,
            "channels": {c: {"template": "security_login"} for c in ("push", "sms", "email")},
        },
        strict=False,
    )
    profile = UserProfile.model_validate(
        {
            "user_id": "a",
            "email": "a@example.com",
            "phone": "+33612345678",
            "devices": [{"token": "t1", "platform": "android"}],
        },
        strict=False,
    )
    hostile = "Fire\x1b]0;pwned\x07fox\u202e\x00\r\nX-Injected: 1"
    ev = event(type="security.login", data={"device": hostile, "city": "Ly\u2066on\u2069\x9b"})
    plan = plan_notifications(ev, profile, rule, TemplateStore(EXAMPLES / "templates"), NOW)
    by_channel = {n.channel: n for n in plan.notifications}
    email, push, sms = by_channel[Channel.EMAIL], by_channel[Channel.PUSH], by_channel[Channel.SMS]
    assert isinstance(email, EmailNotification) and isinstance(push, PushNotification)
    assert isinstance(sms, SmsNotification)
    texts = [email.subject, email.text, push.title, push.body, sms.text]
    assert not [c for t in texts for c in control_characters(t)], texts
    assert "\n" not in email.subject and "\n" not in push.title
    assert "Fire]0;pwnedfox" in email.text + push.body + sms.text  # the visible text is kept
