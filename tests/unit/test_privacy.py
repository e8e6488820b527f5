"""Pseudonyms: keyed, stable for a key, marked by kind, and applied to what providers and errors say."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from kernel import privacy
from kernel.privacy import Pseudonyms, pseudonym, scrub

KEY = b"k" * 32
PSEUDONYM = re.compile(r"^[uen]:[0-9a-f]{12}$")


@pytest.fixture
def configured() -> Iterator[None]:
    privacy.configure(SecretStr("a-deployment-key-of-32-characters"))
    yield
    privacy.configure(None)


def test_a_pseudonym_is_short_stable_and_says_what_kind_of_value_it_stands_for() -> None:
    names = Pseudonyms(KEY)
    assert names("ada") == names("ada") and PSEUDONYM.match(names("ada"))
    assert names("ada")[:2] == "u:" and names("ada@example.com")[:2] == "e:"
    assert names("+33612000001")[:2] == "n:"
    assert names("ada") != names("adb")
    # The same address or number however it is written.
    assert names("Ada@Example.COM") == names("ada@example.com")
    assert names("+33 6 12 00 00 01") == names("+33612000001")


def test_it_is_keyed_so_a_number_cannot_be_found_by_hashing_candidates() -> None:
    number = "+33612000001"
    assert Pseudonyms(KEY)(number) != Pseudonyms(b"another key, as long as the first")(number)
    digest = Pseudonyms(KEY)(number).split(":")[1]
    for unkeyed in (hashlib.sha256(number.encode()), hashlib.sha256(f"n\x1f{number}".encode())):
        assert not unkeyed.hexdigest().startswith(digest)


def test_the_configured_key_holds_for_the_whole_process(configured: None) -> None:
    expected = Pseudonyms(b"a-deployment-key-of-32-characters")("ada")
    assert pseudonym("ada") == expected
    privacy.configure(SecretStr("a-deployment-key-of-32-characters"))  # another worker, same key
    assert pseudonym("ada") == expected
    privacy.configure(None)  # no key: a random one, never the unkeyed hash
    assert pseudonym("ada") != expected


def test_scrub_replaces_the_known_values_and_anything_shaped_like_an_address_or_number() -> None:
    twilio = "The 'To' number +33612000001 is not a valid phone number."
    assert (
        scrub(twilio, "+33612000001")
        == f"The 'To' number {pseudonym('+33612000001')} is not a valid phone number."
    )
    # Echoed without its +, or met without being known.
    assert "33612000001" not in scrub("Reason: 33612000001 is not valid", "+33612000001")
    assert scrub("number +1 555-010-0001 refused") == f"number {pseudonym('+15550100001')} refused"
    smtp = "5.1.1 <Ada.Lovelace@Example.com>: Recipient address rejected; to=ada.lovelace@example.com."
    assert scrub(smtp) == (
        f"5.1.1 <{pseudonym('ada.lovelace@example.com')}>: Recipient address rejected; "
        f"to={pseudonym('ada.lovelace@example.com')}."
    )
    # A known user id or token is replaced as a whole word, not inside another one.
    assert (
        scrub("no profile for ada; adam is fine", "ada") == f"no profile for {pseudonym('ada')}; adam is fine"
    )
    assert scrub("FCM UNREGISTERED: token tok-ada-1 gone", "tok-ada-1") == (
        f"FCM UNREGISTERED: token {pseudonym('tok-ada-1')} gone"
    )


def test_scrub_leaves_codes_times_and_counts_alone() -> None:
    text = "Twilio 400 (code 21211) at 2026-11-24T10:00:00+00:00, offset 1234567, 3 of 12 device(s), +1234"
    assert scrub(text, None, "") == text


def test_a_log_line_carries_an_address_or_number_only_as_its_pseudonym() -> None:
    import io
    import json
    import logging

    from kernel.logs import build_handler

    stream = io.StringIO()
    logger = logging.getLogger("herald.test.privacy")
    logger.addHandler(build_handler(stream=stream, json_lines=True))
    logger.propagate = False
    try:
        try:
            raise KeyError("ada.lovelace@example.com")
        except KeyError:
            logger.error(
                "send to %s failed", "+33612000001", extra={"to": "Ada.Lovelace@example.com"}, exc_info=True
            )
    finally:
        logger.handlers.clear()
    out = stream.getvalue()
    assert "lovelace" not in out.lower() and "33612000001" not in out, out
    entry = json.loads(out)
    assert entry["message"] == f"send to {pseudonym('+33612000001')} failed"
    assert (
        entry["to"] == pseudonym("ada.lovelace@example.com")
        and pseudonym("ada.lovelace@example.com") in entry["exc"]
    )
