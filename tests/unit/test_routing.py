from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.errors import NoRule
from schemas.channels import Channel
from schemas.rules import Rule
from streams.routing.rules import RuleBook, holds

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


CONDITIONAL = """
rules:
  - match: "order.*"
    channels: {inapp: {template: t}}
  - match: "order.*"
    name: big orders
    when:
      - {path: data.total, op: gt, value: 100}
      - {path: country, op: in, value: [FR, DE]}
    channels: {sms: {template: t}}
"""


def test_conditions_select_the_narrower_rule() -> None:
    book = RuleBook.from_yaml(CONDITIONAL)
    assert book.match("order.paid", {"total": 150, "country": "FR"}).name == "big orders"
    assert book.match("order.paid", {"total": 50, "country": "FR"}).name is None
    assert book.match("order.paid", {"total": "lots", "country": "FR"}).name is None  # unlike types: false
    assert book.match("order.paid", {}).name is None


def test_errors_give_the_line() -> None:
    document = (
        "rules:\n  - match: a\n    channels: {inapp: {template: t}}\n"
        "  - match: b\n    delay: soon\n    channels: {inapp: {template: t}}\n"
    )
    with pytest.raises(ValueError, match=r"line 4: rules\.1"):
        RuleBook.from_yaml(document)


def test_fallback_must_name_routed_channels() -> None:
    with pytest.raises(ValueError, match="fallback"):
        RuleBook.from_yaml(
            "rules:\n  - match: a\n    fallback: [sms]\n    channels: {inapp: {template: t}}\n"
        )


def test_ruleset_round_trips_as_json() -> None:
    book = RuleBook.from_yaml(CONDITIONAL)
    assert RuleBook.from_json(book.to_ruleset().to_json()) == book


def _first_match(book: RuleBook, event_type: str, data: dict[str, object]) -> Rule | None:
    # The definition the book's per-type cache must keep: the first rule, most specific first, whose
    # pattern matches and whose conditions hold.
    for rule in book.rules:
        if fnmatch.fnmatchcase(event_type, rule.match) and all(holds(c, data) for c in rule.when):
            return rule
    return None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(alphabet="order.shipdcaeluzx*", max_size=16),
            st.fixed_dictionaries({"total": st.integers(0, 200), "country": st.sampled_from(["FR", "US"])}),
        ),
        max_size=30,
    )
)
def test_the_rule_for_each_type_is_the_first_that_matches_as_types_repeat(
    events: list[tuple[str, dict[str, object]]],
) -> None:
    book = RuleBook.from_yaml(RULES.replace("rules:\n", "rules:\n" + CONDITIONAL.split("rules:\n")[1]))
    for event_type, data in events * 2:  # each type met again, answered from the cache
        expected = _first_match(book, event_type, data)
        if expected is None:
            with pytest.raises(NoRule):
                book.match(event_type, data)
        else:
            assert book.match(event_type, data) is expected


def test_the_rules_kept_per_type_are_bounded() -> None:
    book = RuleBook.from_yaml(RULES)
    for n in range(10_000):
        book.match(f"user.{n}")
    assert 0 < len(book._types) <= 4096
    assert book.match("order.shipped").channels.keys() == {Channel.EMAIL}
