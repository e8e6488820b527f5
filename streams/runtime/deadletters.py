"""Building dead-letter records from a consumed message and the error that stopped it."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from kernel.errors import HeraldError
from kernel.privacy import scrub
from schemas.deadletter import DeadLetter, DeadLetterStage
from schemas.reasons import reason_of

# A dead letter must fit in one Kafka record (1 MiB by default) even when the message it carries was the
# problem, e.g. an event that fanned out into a notification too large to produce. Base64 adds a third.
MAX_ORIGINAL_BYTES = 512 * 1024
MAX_KEY_BYTES = 4 * 1024  # a longer key is cut, in `key_b64` and as the dead letter's own key
# A dead letter's size besides its original and key: the fields, and a detail of 2,000 characters at up to six
# bytes each in JSON (a control character is escaped as \u00XX).
ENVELOPE_BYTES = 16 * 1024


def original_room(max_record_bytes: int) -> int:
    """How much of the original a dead letter carries so that, with its key (twice: the record's key and
    `key_b64`), it fits in `max_record_bytes`."""
    room = max_record_bytes - ENVELOPE_BYTES - MAX_KEY_BYTES - MAX_KEY_BYTES * 4 // 3 - 16  # base64 rounds up
    return max(0, min(MAX_ORIGINAL_BYTES, room * 3 // 4))


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: BaseException,
    stage: DeadLetterStage,
    max_original_bytes: int = MAX_ORIGINAL_BYTES,
) -> DeadLetter:
    # An unexpected error is still dead-lettered (`internal_error`), never lost: its class tells the operator
    # where to look.
    reason = reason_of(error)
    detail = error.detail if isinstance(error, HeraldError) else f"{type(error).__name__}: {error}"
    # Where a detail was made, personal data was pseudonymized; an unexpected error's message was not, so
    # anything shaped like an address or number is, here (the original record keeps the values for replay).
    detail = scrub(detail)
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key_b64=base64.b64encode(key[:MAX_KEY_BYTES]).decode() if key is not None else None,
        original_b64=base64.b64encode((value or b"")[:max_original_bytes]).decode(),
        original_truncated=len(value or b"") > max_original_bytes,
        reason=reason,
        detail=detail[:2000],
        error_class=type(error).__name__,
        stage=stage,
        at=datetime.now(UTC),
    )
