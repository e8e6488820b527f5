"""The worker's side of the preference center, without transport: what the rules in force offer, and the
snapshot the owner answers with (the routing to the owner is the inbox's, tested with it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from schemas.preference_center import PreferencesRequest, PreferencesSnapshot
from streams.effects import REVISION
from streams.routing.offered import offered
from streams.routing.rules import RuleBook
from streams.state.preferences_api import PreferencesApi

EXAMPLE_RULES = Path(__file__).resolve().parents[2] / "examples" / "rules.yaml"


def book(text: str) -> RuleBook:
    return RuleBook.from_yaml(text)


def summary(rules: RuleBook) -> dict[str, tuple[bool, dict[str, bool]]]:
    return {
        category.category: (category.locked, {c.channel.value: c.locked for c in category.channels})
        for category in offered(rules.rules)
    }


def test_the_example_rules_offer_their_categories_by_name_with_security_locked() -> None:
    assert summary(RuleBook.from_file(EXAMPLE_RULES)) == {
        "messages": (False, {"inapp": False, "email": False, "push": False}),
        "orders": (False, {"inapp": False, "email": False}),
        "security": (True, {"email": True, "push": True, "sms": True}),
        "social": (False, {"inapp": False}),
    }


def test_a_channel_is_locked_only_if_every_rule_of_its_category_sending_on_it_is_critical() -> None:
    rules = book(
        """
rules:
  - match: password.reset          # critical: the category is critical by default
    category: security
    channels: {email: {template: t}}
  - match: security.tip
    category: security
    critical: false
    channels: {email: {template: t}, push: {template: t}}
  - match: security.login
    category: security
    channels: {sms: {template: t}}
  - match: promo.sent
    category: marketing
    critical: true
    channels: {email: {template: t}}
"""
    )
    assert summary(rules) == {
        "marketing": (True, {"email": True}),
        "security": (False, {"email": False, "push": False, "sms": True}),
    }


def api(table: dict[str, Any]) -> PreferencesApi:
    rules = RuleBook.from_file(EXAMPLE_RULES)
    return PreferencesApi(None, lambda: rules, table.get)  # type: ignore[arg-type]  # answers only


def test_the_snapshot_holds_the_offer_and_the_stored_preferences_or_the_defaults() -> None:
    stored = {
        "user_id": "alice",
        "muted": False,
        "channels": {"sms": False},
        "categories": {},
        "quiet_hours": {},
        REVISION: 41,  # as the directory stores it: not part of the preferences
    }
    answer = api({"alice": stored})
    alice = PreferencesSnapshot.model_validate_json(answer.snapshot(PreferencesRequest(user_id="alice")))
    assert alice.preferences.channels == {"sms": False}
    assert [c.category for c in alice.categories] == ["messages", "orders", "security", "social"]
    bob = orjson.loads(answer.snapshot(PreferencesRequest(user_id="bob")))
    assert bob["preferences"] == {
        "schema_version": 1,
        "user_id": "bob",
        "muted": False,
        "channels": {},
        "categories": {},
        "quiet_hours": {},
    }
