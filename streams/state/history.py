"""The preferences history: each preferences record the directory applies is also written, as it was asked
for, with its time and source, to the history topic (the compacted preferences topic keeps the latest)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.preferences import SOURCE_HEADER, PreferencesChange, PreferenceSource, PreferencesUpdate
from streams.effects import Record

Headers = Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None


def source_of(headers: Headers) -> PreferenceSource:
    """The `herald-source` header's value; unknown without one."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for name, value in pairs:
        if name == SOURCE_HEADER:
            return PreferenceSource.of_header(value)
    return PreferenceSource.UNKNOWN


@dataclass(frozen=True)
class History:
    """Where the directory records the preferences record it is applying, and with what time and source."""

    topic: str
    source: PreferenceSource
    at: datetime

    @classmethod
    def of(cls, topic: str, headers: Headers, timestamp: float | None, now: datetime) -> History:
        """From the record: its header, and its timestamp (seconds) if it has one, else `now`."""
        at = datetime.fromtimestamp(timestamp, UTC) if timestamp and timestamp > 0 else now
        return cls(topic, source_of(headers), at)

    def records(self, user_id: str, update: PreferencesUpdate | None, *, changed: bool) -> list[Record]:
        """The history record of `update` (None: the preferences were deleted), which `changed` the stored
        preferences or not. A record without a source that changed nothing is left out: that is the
        directory's own restatement of the whole preferences after a partial update. One with a source is
        kept even so: a user who opts out twice said so twice, and a batch run again after a failed produce
        finds its changes already in the table."""
        if not changed and self.source is PreferenceSource.UNKNOWN:
            return []
        deleted = update is None
        asked = PreferencesUpdate(user_id=user_id) if update is None else update
        return [
            Record.of(self.topic, user_id, PreferencesChange.of(asked, self.at, self.source, deleted=deleted))
        ]
