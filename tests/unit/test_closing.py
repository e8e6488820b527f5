"""The worker's closing service: on stop every closer runs once, and one that fails spares the rest."""

from __future__ import annotations

from streams.runtime.closing import Closing


async def test_every_closer_runs_on_stop_even_after_one_fails() -> None:
    closed: list[str] = []

    async def providers() -> None:
        closed.append("providers")

    async def broken() -> None:
        closed.append("broken")
        raise RuntimeError("a client that would not close")

    async def pool() -> None:
        closed.append("pool")

    service = Closing([providers, broken, pool])
    await service.start()
    assert closed == []
    await service.stop()
    assert closed == ["providers", "broken", "pool"]
