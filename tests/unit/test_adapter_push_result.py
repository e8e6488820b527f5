"""PushResult's views for token hygiene and per-token retries."""

from __future__ import annotations

from adapters.push import PushResult, PushToken, TokenOutcome
from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from schemas.users import TokenKind


def token(value: str) -> PushToken:
    return PushToken(value, TokenKind.FCM_FID)


def test_the_result_sorts_tokens_into_delivered_invalid_and_retry() -> None:
    gone = PermanentDeliveryError("gone", reason="unregistered", provider_code="UNREGISTERED")
    busy = RetriableDeliveryError("busy", provider_code="UNAVAILABLE")
    result = PushResult(
        (
            TokenOutcome(token("ok"), message_id="m1"),
            TokenOutcome(token("gone"), error=gone, token_invalid=True),
            TokenOutcome(token("busy"), error=busy),
        )
    )

    assert [o.token.value for o in result.delivered] == ["ok"]
    assert [o.token.value for o in result.failed] == ["gone", "busy"]
    assert result.invalid_tokens == [token("gone")]
    assert result.retry_tokens == [token("busy")]


def test_a_token_repr_shows_only_its_tail() -> None:
    assert repr(PushToken("abcdefghijklmnop", TokenKind.APNS)) == "PushToken(kind=apns, value=…klmnop)"
