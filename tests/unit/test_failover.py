from __future__ import annotations

import pytest

from kernel.errors import DeliveryError, PermanentDeliveryError, RetriableDeliveryError
from streams.delivery.circuit import CircuitBreaker
from streams.delivery.failover import Attempt, ProviderChain


class FakeProvider:
    """Answers from a script: None (accept) or an error to raise; records every call."""

    def __init__(self, name: str, *script: DeliveryError | None) -> None:
        self.name = name
        self.script = list(script)
        self.calls: list[str] = []

    async def send(self, message: str) -> str | None:
        self.calls.append(message)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return f"{self.name}-id"


def chain(*providers: FakeProvider, threshold: int = 2) -> ProviderChain[str]:
    return ProviderChain(list(providers), breaker_factory=lambda: CircuitBreaker(threshold, 60))


async def attempts_of(c: ProviderChain[str], message: str) -> tuple[list[Attempt], object]:
    seen: list[Attempt] = []

    async def record(attempt: Attempt) -> None:
        seen.append(attempt)

    try:
        result: object = await c.send(message, record)
    except DeliveryError as exc:
        result = exc
    return seen, result


async def test_first_provider_delivers() -> None:
    a, b = FakeProvider("a"), FakeProvider("b")
    seen, sent = await attempts_of(chain(a, b), "m")
    assert getattr(sent, "provider", None) == "a" and b.calls == []
    assert [(x.provider, x.error) for x in seen] == [("a", None)]


async def test_outage_fails_over_to_the_next() -> None:
    a = FakeProvider("a", RetriableDeliveryError("down"))
    b = FakeProvider("b")
    seen, sent = await attempts_of(chain(a, b), "m")
    assert getattr(sent, "provider", None) == "b"
    assert [x.provider for x in seen] == ["a", "b"] and seen[0].error is not None


async def test_recipient_refusal_does_not_fail_over() -> None:
    a = FakeProvider("a", PermanentDeliveryError("bad address", reason="invalid_number"))
    b = FakeProvider("b")
    _, result = await attempts_of(chain(a, b), "m")
    assert isinstance(result, PermanentDeliveryError) and b.calls == []


async def test_provider_fault_fails_over() -> None:
    a = FakeProvider("a", PermanentDeliveryError("bad key", reason="provider_auth"))
    b = FakeProvider("b")
    _, sent = await attempts_of(chain(a, b), "m")
    assert getattr(sent, "provider", None) == "b"


async def test_open_circuit_skips_the_provider() -> None:
    a = FakeProvider("a", *[RetriableDeliveryError("down")] * 10)
    b = FakeProvider("b")
    c = chain(a, b, threshold=2)
    for _ in range(4):
        await attempts_of(c, "m")
    assert len(a.calls) == 2  # skipped once its circuit opened
    assert len(b.calls) == 4


async def test_all_failing_raises_the_retriable_error() -> None:
    a = FakeProvider("a", RetriableDeliveryError("down"))
    b = FakeProvider("b", PermanentDeliveryError("bad key", reason="provider_auth"))
    _, result = await attempts_of(chain(a, b), "m")
    assert isinstance(result, RetriableDeliveryError)


async def test_no_provider_is_permanent() -> None:
    _, result = await attempts_of(chain(), "m")
    assert isinstance(result, PermanentDeliveryError) and result.reason == "no_provider"


@pytest.mark.parametrize("threshold", [1, 3])
async def test_circuit_open_everywhere_is_retriable(threshold: int) -> None:
    a = FakeProvider("a", *[RetriableDeliveryError("down")] * 10)
    c = chain(a, threshold=threshold)
    for _ in range(threshold):
        await attempts_of(c, "m")
    _, result = await attempts_of(c, "m")
    assert isinstance(result, RetriableDeliveryError) and result.reason == "circuit_open"
