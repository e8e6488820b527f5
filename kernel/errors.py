"""Herald's errors, all in one tree. Each carries a short `reason` (a bounded metric label) and whether a
retry may help (`retriable`). The reasons that reach the wire are members of `schemas.reasons`.

HeraldError
├── ConfigurationError       a setting is missing or invalid; the message names the HERALD_* variable
├── InvalidInput             a command's input file or flags do not hold what it expects
├── WebhookRefused           a provider webhook request that is not recent, signed and intact  → 4xx
├── BrokerError              the broker could not be started, reached or used
│   ├── BrokerPortInUse      the embedded broker's port is taken
│   └── TopicCreationError   the broker refused to create a topic
├── InboxUnavailable         an inbox change could not be made durable (retriable)
├── PreferencesUnavailable   a user's preferences could not be read or a change made durable (retriable)
├── PreferencesRefused       a preference-center change the rules in force do not allow (locked, not offered)
├── RejectedInput            the input itself is wrong; retrying never helps  → DLQ
│   ├── InvalidEvent         not JSON, or not a valid envelope
│   ├── InvalidProfile       a user profile that fails validation
│   ├── InvalidPreferences   user preferences that fail validation
│   ├── NoRule               no routing rule matches the event type
│   ├── UnknownUser          the recipient has no profile
│   ├── TemplateFailure      a template is missing or cannot render with this data
│   ├── TooManyRecipients    an event for more recipients than HERALD_MAX_RECIPIENTS
│   └── RecordTooLarge       a record or table value it would make is over HERALD_MAX_RECORD_BYTES
└── DeliveryError            a provider refused or failed
    ├── PermanentDeliveryError   the provider will never accept it  → DLQ
    └── RetriableDeliveryError   may succeed later (timeouts, 4xx throttling, 5xx)
"""

from __future__ import annotations

from schemas.reasons import DeliveryReason, RejectReason
from schemas.webhooks import WebhookRefusal


class HeraldError(Exception):
    reason: str = "error"
    retriable: bool = False

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason


class ConfigurationError(HeraldError):
    """A setting is missing or invalid; the message names the `HERALD_*` variable at fault."""

    reason = "configuration"


class InvalidInput(HeraldError, ValueError):
    """The file or flags do not hold what the command expects; the message says where."""

    reason = "invalid_input"


class WebhookRefused(HeraldError):
    """A request that is not a recent, intact batch from the provider; `reason` is a bounded metric label."""

    reason: WebhookRefusal

    def __init__(self, reason: WebhookRefusal, status_code: int = 401) -> None:
        super().__init__(reason.value, reason=reason)
        self.status_code = status_code


class BrokerError(HeraldError):
    """The broker could not be started, reached or used; see `retriable` before trying again."""

    reason = "broker"

    def __init__(self, detail: str, *, retriable: bool = False) -> None:
        super().__init__(detail)
        self.retriable = retriable


class BrokerPortInUse(BrokerError):
    """Not retriable as is: the port stays taken until the setting or the other process changes."""


class TopicCreationError(BrokerError):
    """The broker could not be reached, or refused to create a topic; `retriable` follows its error."""


class InboxUnavailable(HeraldError):
    """An inbox change could not be made durable; retriable once the broker is back."""

    reason = "inbox_unavailable"
    retriable = True


class PreferencesUnavailable(HeraldError):
    """The owner of the user's preferences did not answer, or the broker did not take a change; retriable."""

    reason = "preferences_unavailable"
    retriable = True


class PreferencesRefused(HeraldError):
    """A user's change the rules in force do not allow: `reason` is the error code (`locked`: a critical
    category's channel, always sent; `not_offered`: a category or channel no rule defines), `choices` the
    `category:channel` pairs at fault."""

    def __init__(self, reason: str, detail: str, choices: list[str]) -> None:
        super().__init__(detail, reason=reason)
        self.choices = choices


class RejectedInput(HeraldError):
    """Raise a subclass (or pass `reason`): each names its reason, which its dead letter carries."""

    reason: RejectReason

    def __init__(self, detail: str, *, reason: RejectReason | None = None) -> None:
        super().__init__(detail, reason=reason)


class InvalidEvent(RejectedInput):
    reason = RejectReason.INVALID_EVENT


class InvalidProfile(RejectedInput):
    reason = RejectReason.INVALID_PROFILE


class InvalidPreferences(RejectedInput):
    reason = RejectReason.INVALID_PREFERENCES


class NoRule(RejectedInput):
    reason = RejectReason.NO_RULE


class UnknownUser(RejectedInput):
    reason = RejectReason.UNKNOWN_USER


class TemplateFailure(RejectedInput):
    reason = RejectReason.TEMPLATE_ERROR


class TooManyRecipients(RejectedInput):
    reason = RejectReason.TOO_MANY_RECIPIENTS


class RecordTooLarge(RejectedInput):
    """Raised before anything reaches the producer: the broker would refuse the record, and a produce that
    fails stops the worker's batch (or, for a changelog, the worker)."""

    reason = RejectReason.TOO_LARGE


class DeliveryError(HeraldError):
    reason: DeliveryReason = DeliveryReason.PROVIDER_REFUSED

    def __init__(
        self, detail: str, *, reason: DeliveryReason | None = None, provider_code: str | None = None
    ) -> None:
        super().__init__(detail, reason=reason)
        self.provider_code = provider_code


class PermanentDeliveryError(DeliveryError):
    reason = DeliveryReason.PROVIDER_REFUSED


class RetriableDeliveryError(DeliveryError):
    reason = DeliveryReason.PROVIDER_UNAVAILABLE
    retriable = True

    def __init__(
        self,
        detail: str,
        *,
        reason: DeliveryReason | None = None,
        provider_code: str | None = None,
        retry_after: float | None = None,
        retry_with: object | None = None,
    ) -> None:
        super().__init__(detail, reason=reason, provider_code=provider_code)
        self.retry_after = retry_after
        # What to send on the retry when it differs from the original (push: only the tokens that failed).
        self.retry_with = retry_with
