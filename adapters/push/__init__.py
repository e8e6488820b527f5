"""The push provider interface: one `send` to a user's device tokens, reporting each token's outcome, and
`aclose` to release connections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kernel.errors import DeliveryError
from schemas.notifications import PushNotification
from schemas.users import TokenKind


@dataclass(frozen=True, slots=True)
class PushToken:
    value: str
    kind: TokenKind

    def __repr__(self) -> str:
        # Tokens address a person's device: keep them out of logs and tracebacks whole.
        return f"PushToken(kind={self.kind.value}, value=…{self.value[-6:]})"


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    """One token's result: delivered with the provider's id, or failed with a Herald error.

    `token_invalid` says the provider reported the token as gone: drop it from the user's profile."""

    token: PushToken
    message_id: str | None = None
    error: DeliveryError | None = None
    token_invalid: bool = False

    @property
    def delivered(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class PushResult:
    outcomes: tuple[TokenOutcome, ...]

    @property
    def delivered(self) -> list[TokenOutcome]:
        return [outcome for outcome in self.outcomes if outcome.delivered]

    @property
    def failed(self) -> list[TokenOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.delivered]

    @property
    def invalid_tokens(self) -> list[PushToken]:
        """Tokens to remove (token hygiene)."""
        return [outcome.token for outcome in self.outcomes if outcome.token_invalid]

    @property
    def retry_tokens(self) -> list[PushToken]:
        """Tokens whose failure may pass on a later attempt; only these should be sent again."""
        return [
            outcome.token
            for outcome in self.outcomes
            if outcome.error is not None and outcome.error.retriable
        ]


class PushSender(Protocol):
    """A push provider (`adapters/push/<provider>.py`), built by its `from_settings`."""

    name: str  # the provider's name in settings (HERALD_PUSH_PROVIDERS) and in metrics
    kinds: frozenset[TokenKind]  # the kinds of token it can address

    async def send(self, message: PushNotification, tokens: Sequence[PushToken]) -> PushResult:
        """Deliver one notification to each token, reporting every token's outcome in the result.

        Per-token refusals are outcomes, not exceptions. Raises `PermanentDeliveryError` or
        `RetriableDeliveryError` (kernel.errors) only when the whole call fails (credentials, transport
        set-up), never SDK errors."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds (connections, pools, SDK apps); it sends nothing afterwards."""
        ...
