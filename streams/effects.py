"""What a step decides should happen, as data: records to produce now or later, status records, dead letters
and table writes. Steps return `Effects`; the runtime applies a whole batch's effects at once, so a step
never awaits the broker and is tested without one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from schemas.base import WireModel
from schemas.deadletter import DeadLetterStage
from schemas.reasons import DecisionReason
from schemas.status import DeliveryStatus

# The worker's tables (kernel.topics.TABLES); a write names one.
TableName = Literal["users", "preferences", "delivered", "digests", "throttles", "inbox"]

# In a stored profile or preferences value: the offset, on the user's partition of its topic, of the record
# that last changed it (streams.state.directory.Revisions says why). Not part of the value read back.
REVISION = "revision"


@dataclass(frozen=True, slots=True)
class Record:
    """One record to produce; `partition` None lets the key choose it (murmur2, as every Herald producer)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, topic: str, key: str, value: WireModel) -> Record:
        return cls(topic, key.encode(), value.to_json())


@dataclass(frozen=True, slots=True)
class Later:
    """A record to produce once `due` has passed, held on the scheduler's tier topics (never in memory)."""

    due: datetime
    record: Record
    reason: DecisionReason  # why it waits (one of DEFER_REASONS); a metric label


@dataclass(frozen=True, slots=True)
class Rejected:
    """The input that caused these effects goes to the dead-letter topic for `error`, at `stage`."""

    error: BaseException
    stage: DeadLetterStage


@dataclass(frozen=True, slots=True)
class TableWrite:
    """A table's new value for `key` (JSON-able), or None to delete it. Written to the changelog partition of
    the input that caused it: tables are partitioned like the topics they serve."""

    table: TableName
    key: str
    value: Any


@dataclass
class Effects:
    records: list[Record] = field(default_factory=list)
    later: list[Later] = field(default_factory=list)
    statuses: list[DeliveryStatus] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    writes: list[TableWrite] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.records or self.later or self.statuses or self.rejected or self.writes)
