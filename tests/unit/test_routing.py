from __future__ import annotations

import pytest

from schemas.channels import Channel
from streams.errors import NoRule
from streams.routing import RuleBook

RULES = """
rules:
  - match: "order.*"
    channels: {inapp: {template: order_update}}
  - match: order.shipped
    channels: {email: {template: order_shipped}}
  - match: "order.ship*"
    channels: {sms: {template: x}}
  - match: "*"
    category: fallback
    channels: {inapp: {template: generic}}
"""


def test_exact_type_beats_globs() -> None:
    book = RuleBook.from_yaml(RULES)
    assert set(book.match("order.shipped").channels) == {Channel.EMAIL}


def test_longer_glob_beats_shorter() -> None:
    book = RuleBook.from_yaml(RULES)
    assert set(book.match("order.shipping_delayed").channels) == {Channel.SMS}
    assert set(book.match("order.cancelled").channels) == {Channel.INAPP}
    assert book.match("user.signed_up").category == "fallback"


def test_no_rule_raises() -> None:
    book = RuleBook.from_yaml("rules:\n  - match: order.shipped\n    channels: {inapp: {template: t}}\n")
    with pytest.raises(NoRule, match=r"user\.created"):
        book.match("user.created")


def test_glob_does_not_match_across_case() -> None:
    book = RuleBook.from_yaml("rules:\n  - match: 'order.*'\n    channels: {inapp: {template: t}}\n")
    with pytest.raises(NoRule):
        book.match("Order.shipped")


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ("rules:\n  - match: a\n    channels: {fax: {template: t}}\n", "rules.0.channels"),
        ("rules:\n  - match: a\n    channels: {}\n", "rules.0.channels"),
        ("rules:\n  - channels: {inapp: {template: t}}\n", "rules.0.match"),
        ("rules: [\n", "not valid YAML"),
        ("rules:\n  - match: a\n    channels: {inapp: {template: '../etc'}}\n", "template"),
    ],
)
def test_invalid_rules_name_the_field(document: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        RuleBook.from_yaml(document)
