from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.delivery.dedup import (
    already_delivered,
    delivered_at,
    entry_key,
    expired_keys,
    recipient_of,
)
from streams.delivery.expiry import DedupExpiry
from streams.state.directory import home_partition


def test_remembered_within_retention_only() -> None:
    assert already_delivered(100.0, now=150.0, retention=60)
    assert not already_delivered(100.0, now=161.0, retention=60)
    assert not already_delivered(None, now=150.0, retention=60)


@given(st.text(min_size=1).filter(lambda s: "\x1f" not in s), st.text(min_size=1))
def test_an_entry_key_names_its_recipient(recipient: str, notification_id: str) -> None:
    assert recipient_of(entry_key(recipient, notification_id)) == recipient


def test_an_entry_is_found_by_recipient_and_notification() -> None:
    table = {entry_key("ann", "n1"): 100.0}
    assert delivered_at(table.get, "ann", "n1") == 100.0
    assert delivered_at(table.get, "ann", "n2") is None
    assert delivered_at(table.get, "bob", "n1") is None


def test_an_earlier_versions_per_recipient_map_is_still_read() -> None:
    # Written before one entry per notification: a replay across the upgrade is still a duplicate.
    table: dict[str, Any] = {"ann": {"n1": 100.0, "n2": 120.0}}
    assert delivered_at(table.get, "ann", "n2") == 120.0
    assert delivered_at(table.get, "ann", "n3") is None


def test_what_is_past_the_retention_expires() -> None:
    items = [
        (entry_key("ann", "old"), 10.0),
        (entry_key("ann", "new"), 95.0),
        ("bob", {"a": 10.0, "b": 20.0}),  # an earlier version's map: expires by its newest id
        ("eve", {"a": 10.0, "b": 95.0}),
        ("odd", "not a time"),  # a value this version cannot read is left alone
    ]
    assert expired_keys(items, now=100.0, retention=50) == [entry_key("ann", "old"), "bob"]


class _Table:
    """A Faust table's store and changelog, the changelog recorded."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.changelog: list[tuple[int, str, Any, str | None]] = []

    def send_changelog(
        self, partition: int, key: str, value: Any, value_serializer: str | None = None
    ) -> asyncio.Future[None]:
        self.changelog.append((partition, key, value, value_serializer))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_the_sweep_deletes_expired_entries_of_owned_partitions_with_tombstones() -> None:
    partitions = 8
    users = [f"user-{i}" for i in range(40)]
    mine = {home_partition(u, partitions) for u in users[:10]}
    data: dict[str, Any] = {}
    for user in users:
        data[entry_key(user, "old")] = 10.0
        data[entry_key(user, "new")] = 95.0
    table = _Table(data)
    expiry = DedupExpiry(table, lambda: mine, partitions, retention_seconds=50, clock=lambda: 100.0)

    removed = await expiry.sweep()

    owned_users = [u for u in users if home_partition(u, partitions) in mine]
    assert removed == len(owned_users) > 0
    assert {key for _, key, _, _ in table.changelog} == {entry_key(u, "old") for u in owned_users}
    # Tombstones (no value, sent raw so the codec does not write `null`), each on its recipient's partition.
    assert all(value is None and raw == "raw" for _, _, value, raw in table.changelog)
    assert all(p == home_partition(recipient_of(key), partitions) for p, key, _, _ in table.changelog)
    # Other workers' partitions and entries within the retention are left.
    for user in users:
        assert entry_key(user, "new") in table.data
        assert (entry_key(user, "old") in table.data) is (user not in owned_users)
    assert await expiry.sweep() == 0


async def test_the_sweep_walks_a_large_table_a_chunk_at_a_time_while_it_changes() -> None:
    from streams.delivery.expiry import CHUNK

    entries = {entry_key(f"user-{i}", "old"): 10.0 for i in range(CHUNK * 2 + 7)}
    table = _Table(entries)
    expiry = DedupExpiry(table, lambda: set(range(8)), 8, retention_seconds=50, clock=lambda: 100.0)

    async def deliver_meanwhile() -> None:
        await asyncio.sleep(0)  # between two chunks: an agent writes a new entry
        table.data[entry_key("late", "new")] = 99.0

    removed, _ = await asyncio.gather(expiry.sweep(), deliver_meanwhile())
    assert removed == CHUNK * 2 + 7
    assert table.data == {entry_key("late", "new"): 99.0}


async def test_recipient_locks_serialise_one_recipient_and_forget_idle_ones() -> None:
    import asyncio

    from streams.delivery.agents import RecipientLocks

    locks = RecipientLocks()
    order: list[str] = []

    async def work(recipient: str, name: str, pause: float) -> None:
        async with locks.hold(recipient):
            order.append(f"{name}+")
            await asyncio.sleep(pause)
            order.append(f"{name}-")

    await asyncio.gather(work("ann", "a1", 0.05), work("ann", "a2", 0), work("bob", "b1", 0))
    assert order.index("a1-") < order.index("a2+")  # ann's two never overlap
    assert order.index("b1+") < order.index("a1-")  # bob did not wait for ann
    assert len(locks) == 0
