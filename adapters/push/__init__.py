"""The push provider interface: one `send` to a user's device tokens, reporting each token's outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from kernel.errors import DeliveryError
from schemas.notifications import PushNotification


class PushTokenKind(StrEnum):
    """What a device token is, which decides how a provider addresses it."""

    FCM_INSTALLATION = "fcm_fid"  # a Firebase installation id (FCM v1 `fid`, the SDK's preferred target)
    FCM_REGISTRATION = "fcm_token"  # an FCM registration token (FCM v1 `token`, deprecated by the SDK)
    APNS = "apns"  # an APNs device token (hex), for direct APNs


@dataclass(frozen=True, slots=True)
class PushToken:
    value: str
    kind: PushTokenKind

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
    name: str
    kinds: frozenset[PushTokenKind]  # the kinds of token it can address

    async def send(self, message: PushNotification, tokens: Sequence[PushToken]) -> PushResult:
        """Deliver one notification to each token, reporting every token's outcome in the result.

        Per-token refusals are outcomes, not exceptions. Raises `PermanentDeliveryError` or
        `RetriableDeliveryError` (kernel.errors) only when the whole call fails (credentials, transport
        set-up), never SDK errors."""
        ...
