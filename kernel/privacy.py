"""Pseudonyms for personal data in dead-letter details and log lines: a user id, email address, phone number
or device token appears there only as a short keyed hash (`u:3f9a1c0b7d2e`), stable within a deployment.

Keyed (HMAC-SHA256 with `HERALD_PSEUDONYM_KEY`) because a plain hash of a phone number or an address is
reversed by hashing candidates. The key is process-wide, set once at start-up by the composition root, like
the logging configuration: errors that must never hold the raw value are raised deep in pure steps and
adapters, so the pseudonym is made where the message is formatted. Without a configured key each process
draws a random one: pseudonyms then hold only within that process's lifetime.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from pydantic import SecretStr

# An email address as it appears in a provider's answer or an exception message (the quotes of a repr,
# `=` of a parameter and `/` of a path are left outside it).
_EMAIL = re.compile(r"[\w.!#$%&*+^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
# A phone number in international form, possibly grouped: +33612000001, +33 6 12 00 00 01, +1-555-010-0001.
_PHONE = re.compile(r"(?<![\w+])\+\d(?:[ .-]?\d){6,14}(?!\d)")


class Pseudonyms:
    """`pseudonyms(value)` → `<kind>:<12 hex digits>`; the kind says what was there: `e` an email address
    (compared without case), `n` a phone number (compared by its digits), `u` a user id or another
    identifier (a device token)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, value: str) -> str:
        kind, normal = _kind(value)
        digest = hmac.new(self._key, f"{kind}\x1f{normal}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}:{digest[:12]}"

    def scrub(self, text: str, *known: str | None) -> str:
        """`text` with each `known` value (an address, number, user id or token the caller holds) and anything
        shaped like an email address or an international phone number replaced by its pseudonym."""
        for value in sorted({v for v in known if v}, key=len, reverse=True):
            forms = {value}
            if _kind(value)[0] == "n":
                forms.add(value.lstrip("+"))  # providers may echo the number without its +
            for form in forms:
                text = re.sub(rf"(?<![\w+]){re.escape(form)}(?!\w)", self(value), text)
        text = _EMAIL.sub(lambda m: self(m.group()), text)
        return _PHONE.sub(lambda m: self(m.group()), text)


def _kind(value: str) -> tuple[str, str]:
    stripped = value.strip()
    if _EMAIL.fullmatch(stripped):
        return "e", stripped.lower()
    if _PHONE.fullmatch(stripped):
        return "n", "+" + "".join(ch for ch in stripped if ch.isdigit())
    return "u", value


_current = Pseudonyms(secrets.token_bytes(32))


def configure(key: SecretStr | None) -> None:
    """Use `key` (`HERALD_PSEUDONYM_KEY`) from now on; None draws a random key for this process."""
    global _current
    _current = Pseudonyms(key.get_secret_value().encode() if key is not None else secrets.token_bytes(32))


def pseudonym(value: str) -> str:
    """The deployment's pseudonym of `value`, e.g. `u:3f9a1c0b7d2e` for a user id."""
    return _current(value)


def scrub(text: str, *known: str | None) -> str:
    """`text` with `known` values and anything shaped like an email address or phone number pseudonymized."""
    return _current.scrub(text, *known)
