"""Dead-letter records: the reason, the original, and a size that always fits one Kafka record."""

from __future__ import annotations

import base64

from kernel.errors import ConfigurationError, InvalidEvent, UnknownUser
from schemas.deadletter import DeadLetter, DeadLetterStage
from schemas.reasons import RejectReason
from streams.runtime.deadletters import MAX_ORIGINAL_BYTES, dead_letter

KAFKA_DEFAULT_MAX_RECORD = 1024 * 1024


def _letter(value: bytes | None, error: BaseException | None = None) -> DeadLetter:
    return dead_letter(
        topic="herald.events",
        partition=3,
        offset=41,
        key=b"user-1",
        value=value,
        error=error or InvalidEvent("missing field 'type'"),
        stage=DeadLetterStage.INTAKE,
    )


def test_keeps_the_original_bytes_and_the_reason() -> None:
    letter = DeadLetter.model_validate_json(_letter(b"\xff{not json").to_json())
    assert letter.original == b"\xff{not json"
    assert not letter.original_truncated
    assert (letter.reason, letter.stage, letter.offset) == ("invalid_event", "intake", 41)


def test_an_unexpected_error_is_named_by_its_class() -> None:
    letter = _letter(b"{}", RuntimeError("boom"))
    assert (letter.reason, letter.error_class, letter.detail) == (
        "internal_error",
        "RuntimeError",
        "RuntimeError: boom",
    )


def test_an_error_whose_reason_is_not_a_dead_letter_reason_is_an_internal_error() -> None:
    letter = _letter(b"{}", ConfigurationError("HERALD_TEMPLATES_DIR is not a directory"))
    assert (letter.reason, letter.error_class) == (RejectReason.INTERNAL_ERROR, "ConfigurationError")
    assert _letter(b"{}", UnknownUser("no profile")).reason is RejectReason.UNKNOWN_USER


def test_a_huge_original_is_cut_so_the_dead_letter_can_still_be_produced() -> None:
    # Otherwise producing the dead letter fails too, the agent raises, and Faust acks the message: gone.
    huge = b"x" * (2 * KAFKA_DEFAULT_MAX_RECORD)
    encoded = _letter(huge).to_json()
    assert len(encoded) < KAFKA_DEFAULT_MAX_RECORD
    letter = DeadLetter.model_validate_json(encoded)
    assert letter.original_truncated
    assert letter.original == huge[:MAX_ORIGINAL_BYTES]
    assert base64.b64decode(letter.original_b64) == huge[:MAX_ORIGINAL_BYTES]


def test_an_unexpected_errors_message_keeps_no_address_or_number() -> None:
    from kernel.privacy import pseudonym

    error = KeyError("ada.lovelace@example.com, +33612000001")
    letter = _letter(b'{"to": "ada.lovelace@example.com"}', error)
    assert "ada.lovelace" not in letter.detail and "33612000001" not in letter.detail
    assert pseudonym("ada.lovelace@example.com") in letter.detail
    assert pseudonym("+33612000001") in letter.detail
    # The original is the record itself, kept whole for replay.
    assert b"ada.lovelace@example.com" in letter.original
