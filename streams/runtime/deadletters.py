"""Building dead-letter records from a consumed message and the error that stopped it."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from kernel.errors import HeraldError
from schemas.deadletter import DeadLetter, DeadLetterStage
from schemas.reasons import reason_of

# A dead letter must fit in one Kafka record (1 MiB by default) even when the message it carries was the
# problem, e.g. an event that fanned out into a notification too large to produce. Base64 adds a third.
MAX_ORIGINAL_BYTES = 512 * 1024


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: BaseException,
    stage: DeadLetterStage,
) -> DeadLetter:
    # An unexpected error is still dead-lettered (`internal_error`), never lost: its class tells the operator
    # where to look.
    reason = reason_of(error)
    detail = error.detail if isinstance(error, HeraldError) else f"{type(error).__name__}: {error}"
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        original_b64=base64.b64encode((value or b"")[:MAX_ORIGINAL_BYTES]).decode(),
        original_truncated=len(value or b"") > MAX_ORIGINAL_BYTES,
        reason=reason,
        detail=detail[:2000],
        error_class=type(error).__name__,
        stage=stage,
        at=datetime.now(UTC),
    )
