from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.delivery.dedup import already_delivered, remember


def test_remembered_within_retention_only() -> None:
    record = remember(None, "n1", now=100.0, retention=60, cap=10)
    assert already_delivered(record, "n1", now=150.0, retention=60)
    assert not already_delivered(record, "n1", now=161.0, retention=60)
    assert not already_delivered(record, "n2", now=150.0, retention=60)
    assert not already_delivered(None, "n1", now=150.0, retention=60)


def test_expired_entries_are_pruned_when_touched() -> None:
    record = remember(None, "old", now=0.0, retention=60, cap=10)
    record = remember(record, "new", now=100.0, retention=60, cap=10)
    assert set(record) == {"new"}


@given(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=50), st.integers(1, 10))
def test_never_more_than_cap_and_newest_kept(ids: list[str], cap: int) -> None:
    record: dict[str, float] | None = None
    for now, nid in enumerate(ids):
        record = remember(record, nid, now=float(now), retention=1e9, cap=cap)
        assert len(record) <= cap
        assert already_delivered(record, nid, now=float(now), retention=1e9)


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
