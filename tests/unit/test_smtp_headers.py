"""The SMTP adapter's header folding: its shortcut for a header that fits on its line writes exactly what
compat32 would, for any value, so the messages Herald sends did not change with it."""

from __future__ import annotations

import random
import string
from email.policy import compat32

import pytest

from adapters.email.smtp import _FLAT

REFERENCE = compat32.clone(mangle_from_=False)
# Whitespace runs, tabs, words that look like encoded words, quotes, non-ASCII, and lengths on both sides
# of the 78-character line.
ALPHABET = string.ascii_letters + string.digits + " \t<>@.,;:\"'()=?_-/é"
NAMES = ["To", "Subject", "Message-ID", "X-Herald-Notification-Id", "Date"]


def _values(count: int) -> list[str]:
    rng = random.Random(14)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 90))) for _ in range(count)]


@pytest.mark.parametrize("name", NAMES)
def test_every_header_is_folded_as_compat32_folds_it(name: str) -> None:
    values = [*_values(4_000), "", " ", "a  b", " lead", "trail ", "=?utf-8?q?x?=", "x" * 76, "x" * 200]
    assert [_FLAT.fold_binary(name, v) for v in values] == [REFERENCE.fold_binary(name, v) for v in values]


def test_a_short_ascii_header_takes_the_shortcut() -> None:
    # The shortcut is the point: compat32's folding is most of composing a message.
    assert _FLAT.fold_binary("To", "ada@example.com") == b"To: ada@example.com\n"
