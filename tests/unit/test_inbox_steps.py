"""The worker's inbox as data: what a notification and each command do to the `inbox` table, the feed and
`herald.status`, and what the internal endpoint answers from it (no broker: the table is a dict)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.deadletter import DeadLetterStage
from schemas.inbox import FeedHeader, InboxAction, InboxCommand, PageRequest, SessionRequest
from schemas.notifications import InAppNotification
from schemas.reasons import RejectReason
from schemas.status import Outcome
from streams.effects import Effects
from streams.inbox import steps
from streams.inbox.api import InboxApi
from streams.inbox.model import Index, entry_key
from streams.inbox.steps import InboxPolicy

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
POLICY = InboxPolicy(capacity=3, retention_ms=7 * 86_400_000, max_bytes=2048, feed_topic="feed")


class Table(dict[str, Any]):
    def write(self, effects: Effects) -> Effects:
        for write in effects.writes:
            if write.value is None:
                self.pop(write.key, None)
            else:
                self[write.key] = write.value
        return effects


def notification(n: int, *, user: str = "alice", created: datetime = NOW, body: str = "hi") -> bytes:
    return InAppNotification(
        notification_id=f"n{n}",
        event_id=f"e{n}",
        event_type="order.shipped",
        recipient=user,
        occurred_at=created,
        created_at=created,
        title="t",
        body=body,
    ).to_json()


def command(action: InboxAction, *ids: str, user: str = "alice", cid: str = "c1") -> bytes:
    return InboxCommand(command_id=cid, user_id=user, action=action, ids=list(ids), at=1).to_json()


def headers(effects: Effects) -> dict[str, bytes]:
    (record,) = effects.records
    return dict(record.headers)


def store(table: Table, raw: bytes, now: datetime = NOW) -> Effects:
    return table.write(steps.store(POLICY, table.get, raw, now))


def apply(table: Table, raw: bytes, now: datetime = NOW) -> Effects:
    return table.write(steps.apply(POLICY, table.get, raw, now))


def test_a_notification_is_kept_pushed_with_the_unread_count_and_reported_delivered() -> None:
    table = Table()
    effects = store(table, notification(1))
    (record,) = effects.records
    assert record.topic == "feed" and record.key == b"alice"
    frame = orjson.loads(record.value or b"")
    assert frame["type"] == "notification" and frame["unread"] == 1
    assert frame["notification"]["notification_id"] == "n1"
    assert headers(effects)[FeedHeader.KIND] == b"notification"
    (status,) = effects.statuses
    assert status.outcome == Outcome.DELIVERED and status.provider == "inbox"
    assert table[entry_key("alice", "n1")] == notification(1).decode()


def test_a_replayed_notification_changes_nothing() -> None:
    table = Table()
    store(table, notification(1))
    assert not store(table, notification(1))


def test_the_inbox_keeps_the_newest_n_and_tombstones_the_rest() -> None:
    table = Table()
    for n in range(1, 5):
        effects = store(table, notification(n))
    assert [w.key for w in effects.writes if w.value is None] == [entry_key("alice", "n1")]
    assert [line.notification_id for line in Index.load(table["alice"]).lines] == ["n2", "n3", "n4"]
    assert entry_key("alice", "n1") not in table


def test_sequences_only_grow_even_after_the_index_is_deleted() -> None:
    table = Table()
    store(table, notification(1))
    first = int(headers(store(table, notification(2)))[FeedHeader.SEQ])
    later = NOW + timedelta(days=8)
    apply(table, command(InboxAction.EXPIRE), later)
    assert "alice" not in table
    again = store(table, notification(3, created=later), later)
    assert int(headers(again)[FeedHeader.SEQ]) > first


def test_an_oversized_or_malformed_notification_is_dead_lettered_with_its_reason() -> None:
    table = Table()
    (big,) = store(table, notification(1, body="x" * 3000)).rejected
    assert big.stage is DeadLetterStage.INAPP and big.error.reason is RejectReason.TOO_LARGE  # type: ignore[attr-defined]
    assert "HERALD_INAPP_MAX_BYTES" in str(big.error)
    (bad,) = store(table, b"{not json").rejected
    assert bad.error.reason is RejectReason.INVALID_NOTIFICATION  # type: ignore[attr-defined]
    assert not table


def test_mark_read_changes_pushes_an_update_answering_the_command_and_reports_read() -> None:
    table = Table()
    store(table, notification(1))
    store(table, notification(2))
    effects = apply(table, command(InboxAction.MARK_READ, "n1", "unknown"))
    assert headers(effects)[FeedHeader.KIND] == b"update"
    assert headers(effects)[FeedHeader.COMMAND] == b"c1"
    frame = orjson.loads(effects.records[0].value or b"")
    assert frame == {
        "type": "inbox_update",
        "v": 1,
        "items": [{"notification_id": "n1", "read": True, "archived": False}],
        "unread": 1,
    }
    (status,) = effects.statuses
    assert status.outcome == Outcome.READ and status.event_id == "e1"


def test_a_command_that_changes_nothing_is_answered_without_a_push() -> None:
    table = Table()
    store(table, notification(1))
    apply(table, command(InboxAction.MARK_READ, "n1"))
    effects = apply(table, command(InboxAction.MARK_READ, "n1", cid="c2"))
    assert headers(effects)[FeedHeader.KIND] == b"answer"
    assert orjson.loads(effects.records[0].value or b"")["unread"] == 0
    assert not effects.statuses and not effects.writes


def test_mark_all_read_archive_and_unarchive() -> None:
    table = Table()
    for n in range(1, 4):
        store(table, notification(n))
    apply(table, command(InboxAction.ARCHIVE, "n3"))
    assert Index.load(table["alice"]).unread() == 2
    apply(table, command(InboxAction.MARK_ALL_READ))
    assert Index.load(table["alice"]).unread() == 0
    apply(table, command(InboxAction.MARK_UNREAD, "n1"))
    apply(table, command(InboxAction.UNARCHIVE, "n3"))
    assert [x.flags for x in Index.load(table["alice"]).lines] == [0, 1, 1]


def test_a_malformed_command_is_dead_lettered() -> None:
    (rejected,) = apply(Table(), b'{"user_id":"alice"}').rejected
    assert rejected.stage is DeadLetterStage.INBOX_COMMAND
    assert rejected.error.reason is RejectReason.INVALID_COMMAND  # type: ignore[attr-defined]


def test_the_sweep_drops_what_is_past_the_retention_without_a_push() -> None:
    table = Table()
    store(table, notification(1, created=NOW - timedelta(days=6)))
    store(table, notification(2))
    effects = apply(table, command(InboxAction.EXPIRE), NOW + timedelta(days=2))
    assert not effects.records
    assert [line.notification_id for line in Index.load(table["alice"]).lines] == ["n2"]
    assert entry_key("alice", "n1") not in table


def api(table: Table, reply_bytes: int = 64 * 1024) -> InboxApi:
    return InboxApi(
        None,  # type: ignore[arg-type]  # answers only: no routing
        table.get,
        secret="s" * 32,
        reply_bytes=reply_bytes,
        own_url="http://worker",
        timeout_seconds=1,
    )


def test_a_session_recovers_what_came_after_since_oldest_first() -> None:
    table = Table()
    for n in range(1, 4):
        store(table, notification(n))
    reply = orjson.loads(api(table).session(SessionRequest(user_id="alice", since="n1")))
    assert reply["recovered"] is True and reply["unread"] == 3
    assert [f["notification"]["notification_id"] for f in reply["missed"]] == ["n2", "n3"]
    assert reply["seq"] == Index.load(table["alice"]).seq
    unknown = orjson.loads(api(table).session(SessionRequest(user_id="alice", since="gone")))
    assert unknown["recovered"] is False and unknown["missed"] == []
    too_many = orjson.loads(api(table).session(SessionRequest(user_id="alice", since="n1", max_frames=1)))
    assert too_many["recovered"] is False


def test_pages_go_newest_first_with_a_cursor_and_within_the_byte_budget() -> None:
    table = Table()
    for n in range(1, 4):
        store(table, notification(n, body="y" * 1500))
    first = orjson.loads(api(table).page(PageRequest(user_id="alice", limit=2)))
    assert [i["notification"]["notification_id"] for i in first["items"]] == ["n3", "n2"]
    assert first["next_before"] == "n2" and first["unread"] == 3
    rest = orjson.loads(api(table).page(PageRequest(user_id="alice", limit=2, before="n2")))
    assert [i["notification"]["notification_id"] for i in rest["items"]] == ["n1"]
    assert rest["next_before"] is None
    # A budget that holds one notification: every page holds one, and paging still reaches the oldest.
    small = api(table, reply_bytes=4096 + 2000)
    seen, before = [], None
    while True:
        page = orjson.loads(small.page(PageRequest(user_id="alice", limit=3, before=before)))
        seen += [i["notification"]["notification_id"] for i in page["items"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == ["n3", "n2", "n1"]


@pytest.mark.parametrize("archived", [False, True])
def test_the_archive_is_listed_apart(archived: bool) -> None:
    table = Table()
    store(table, notification(1))
    store(table, notification(2))
    apply(table, command(InboxAction.ARCHIVE, "n1"))
    page = orjson.loads(api(table).page(PageRequest(user_id="alice", archived=archived)))
    assert [i["notification"]["notification_id"] for i in page["items"]] == (["n1"] if archived else ["n2"])


async def test_the_sweep_finds_the_owned_inboxes_holding_expired_notifications() -> None:
    from types import SimpleNamespace

    from streams.inbox.agents import _expiring
    from streams.state.directory import home_partition

    table = Table()
    old = NOW - timedelta(days=6)
    users = [f"user{n}" for n in range(12)]
    for user in users:
        store(table, notification(1, user=user, created=old), old)
        store(table, notification(2, user=user))
    store(table, notification(3, user="fresh"))  # on a partition or not, it holds nothing expired
    owned = {0, 1}
    worker = SimpleNamespace(
        tables=SimpleNamespace(inbox=SimpleNamespace(faust=SimpleNamespace(data=table))),
        settings=SimpleNamespace(partitions=4),
        clock=lambda: NOW + timedelta(days=2),  # n1 is then past the 7 days, n2 is not
    )
    found = await _expiring(worker, POLICY, owned)  # type: ignore[arg-type]
    assert sorted(found) == sorted(u for u in users if home_partition(u, 4) in owned)
    assert found and "fresh" not in found


def test_a_notification_already_past_the_retention_is_reported_skipped_not_kept() -> None:
    table = Table()
    effects = store(table, notification(1, created=NOW - timedelta(days=8)))
    (status,) = effects.statuses
    assert (status.outcome, status.reason) == (Outcome.SKIPPED, "expired")
    assert not effects.records and not table
