"""The preference center's logic, without transport: a user's view from what the rules offer and what the user
stored, which changes the rules allow, and the preferences record a change becomes."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from gateway.preference_center import refusal, view
from schemas.channels import Channel
from schemas.preference_center import OfferedCategory, OfferedChannel, PreferenceChanges
from schemas.preferences import Preferences

OFFERED = [
    OfferedCategory(
        category="orders",
        locked=False,
        channels=[
            OfferedChannel(channel=Channel.INAPP, locked=False),
            OfferedChannel(channel=Channel.EMAIL, locked=False),
        ],
    ),
    # Partly critical: password resets (critical) and login alerts (not) both send email; only SMS is locked.
    OfferedCategory(
        category="security",
        locked=False,
        channels=[
            OfferedChannel(channel=Channel.EMAIL, locked=False),
            OfferedChannel(channel=Channel.SMS, locked=True),
        ],
    ),
]


def stored(document: dict[str, object]) -> Preferences:
    return Preferences.model_validate_json(json.dumps({"user_id": "alice", **document}))


def changes(document: dict[str, object]) -> PreferenceChanges:
    return PreferenceChanges.model_validate_json(json.dumps(document))


def choices(preferences: Preferences) -> dict[str, list[tuple[str, bool, bool | None]]]:
    return {
        category.category: [(c.channel.value, c.enabled, c.choice) for c in category.channels]
        for category in view(OFFERED, preferences).categories
    }


def test_without_stored_preferences_everything_is_enabled_and_nothing_chosen() -> None:
    shown = view(OFFERED, Preferences(user_id="alice"))
    assert shown.muted is False and shown.channels == {} and shown.quiet_hours == {}
    assert choices(Preferences(user_id="alice")) == {
        "orders": [("inapp", True, None), ("email", True, None)],
        "security": [("email", True, None), ("sms", True, None)],
    }
    assert [c.locked for c in shown.categories[1].channels] == [False, True]


def test_enabled_follows_the_category_choice_then_the_channel_choice_and_locked_ones_are_always_sent() -> (
    None
):
    preferences = stored(
        {"channels": {"email": False, "sms": False}, "categories": {"orders": {"email": True}}, "muted": True}
    )
    assert choices(preferences) == {
        "orders": [("inapp", True, None), ("email", True, True)],
        "security": [("email", False, None), ("sms", True, None)],
    }
    shown = view(OFFERED, preferences)
    assert shown.muted is True and shown.channels == {Channel.EMAIL: False, Channel.SMS: False}


def test_a_choice_for_a_locked_channel_is_refused_as_locked() -> None:
    refused = refusal(changes({"categories": {"security": {"sms": False, "email": False}}}), OFFERED)
    assert refused is not None and refused.reason == "locked" and refused.choices == ["security:sms"]
    assert "security:sms" in refused.detail
    # Opting in to what is always sent is no choice either.
    assert refusal(changes({"categories": {"security": {"sms": True}}}), OFFERED) is not None


def test_a_choice_the_rules_do_not_offer_is_refused_as_not_offered() -> None:
    refused = refusal(
        changes({"categories": {"marketing": {"email": False}, "orders": {"sms": False}}}), OFFERED
    )
    assert refused is not None and refused.reason == "not_offered"
    assert refused.choices == ["marketing:email", "orders:sms"]


@pytest.mark.parametrize(
    "allowed",
    [
        {"categories": {"orders": {"email": False}}},
        {"categories": {"security": {"sms": None}}},  # clearing a choice, even a locked channel's
        {"categories": {"security": None, "gone": {"email": None}}},  # and stale ones the rules dropped
        {"muted": True, "channels": {"sms": False}},  # critical notifications ignore both
        {"quiet_hours": {"sat": {"start": "23:00", "end": "09:00"}}},
    ],
)
def test_other_changes_are_allowed(allowed: dict[str, object]) -> None:
    assert refusal(changes(allowed), OFFERED) is None


def test_a_change_becomes_a_preferences_record_of_the_given_user_with_its_nulls() -> None:
    change = changes({"categories": {"orders": {"email": False, "inapp": None}}, "quiet_hours": None})
    update = change.update_for("alice")
    assert update.user_id == "alice"
    assert json.loads(update.to_json()) == {
        "user_id": "alice",
        "categories": {"orders": {"email": False, "inapp": None}},
        "quiet_hours": None,
    }


@pytest.mark.parametrize(
    "body",
    [
        {},  # nothing to change
        {"user_id": "bob", "muted": True},  # a user is never named by the client
        {"categories": {"orders": {"fax": False}}},
        {"categories": {"Orders!": {"email": False}}},
        {"muted": "yes"},
    ],
)
def test_malformed_changes_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        changes(body)
