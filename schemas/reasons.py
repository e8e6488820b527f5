"""Every reason Herald writes on a status record, a dead letter or a metric label, in three groups by who
decided: Herald's routing (`DecisionReason`), the input itself (`RejectReason`), a provider or the delivery
around it (`DeliveryReason`). docs/WIRE-FORMATS.md has a table of each, and a test keeps them equal."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class DecisionReason(StrEnum):
    """Why Herald did not send a notification now: the `reason` of a `skipped` or `deferred` status."""

    NO_ADDRESS = "no_address"  # no email, phone or device for the channel
    CHANNEL_DISABLED = "channel_disabled"  # the profile turns the channel off (in-app)
    FALLBACK_NOT_NEEDED = "fallback_not_needed"  # an earlier channel of the rule's fallback list was chosen
    MUTED = "muted"
    OPTED_OUT = "opted_out"
    DUPLICATE = "duplicate"  # already delivered (a replay or a producer's retry)
    QUIET_HOURS = "quiet_hours"
    DELAY = "delay"  # the rule's `delay`
    DIGEST = "digest"  # collected into a digest, sent when the digest is
    THROTTLED = "throttled"  # over the rule's throttle: dropped or deferred, as its `excess` says
    ESCALATION = "escalation"  # a step of the rule's `escalate`: sent later unless the in-app one is read
    CANCELLED_READ = "cancelled_read"  # an escalation step not sent: the in-app notification was read
    EXPIRED = "expired"  # an in-app notification older than the inbox keeps (HERALD_INBOX_RETENTION_DAYS)


# Which decisions drop a notification and which hold it back; a throttle does either.
SKIP_REASONS: Final = frozenset(DecisionReason) - {
    DecisionReason.QUIET_HOURS,
    DecisionReason.DELAY,
    DecisionReason.DIGEST,
    DecisionReason.ESCALATION,
}
DEFER_REASONS: Final = frozenset(
    {
        DecisionReason.QUIET_HOURS,
        DecisionReason.DELAY,
        DecisionReason.DIGEST,
        DecisionReason.THROTTLED,
        DecisionReason.ESCALATION,
    }
)


class RejectReason(StrEnum):
    """Why a record could not be processed at all: the `reason` of its dead letter. Retrying never helps."""

    INVALID_EVENT = "invalid_event"  # not JSON, or not a valid envelope
    INVALID_PROFILE = "invalid_profile"
    INVALID_PREFERENCES = "invalid_preferences"
    INVALID_KEY = "invalid_key"  # a state record without the user id as its key
    INVALID_NOTIFICATION = "invalid_notification"  # a record on a delivery topic that is not a notification
    INVALID_SCHEDULED = "invalid_scheduled"  # a scheduler record that is malformed or targets another topic
    INVALID_COMMAND = "invalid_command"  # an inbox command (herald.inbox.commands) that is malformed
    NO_RULE = "no_rule"
    UNKNOWN_USER = "unknown_user"
    TEMPLATE_ERROR = "template_error"
    TOO_LARGE = "too_large"  # a record it would produce, or a table value it would write, is over the budget
    TOO_MANY_RECIPIENTS = "too_many_recipients"  # an event for more recipients than allowed
    INTERNAL_ERROR = "internal_error"  # anything unexpected: dead-lettered rather than lost


class DeliveryReason(StrEnum):
    """What a provider answered, or why delivery stopped: the `reason` of a `failed` or `dead_lettered`
    status, and of the dead letter of a notification given up on."""

    # Worth a retry; given up on as `retries_exhausted` once the retry topics run out.
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # timeouts, connection failures, 5xx
    RATE_LIMITED = "rate_limited"
    CIRCUIT_OPEN = "circuit_open"  # every provider of the channel is cooling down after failures
    RETRIES_EXHAUSTED = "retries_exhausted"
    # Never worth a retry.
    PROVIDER_REFUSED = "provider_refused"  # a refusal with no finer reason below
    PROVIDER_AUTH = "provider_auth"  # Herald's credentials for the provider are refused
    PROVIDER_MISCONFIGURED = "provider_misconfigured"  # e.g. an APNs topic the key may not use
    NO_PROVIDER = "no_provider"  # no provider is configured for the channel
    INVALID_REQUEST = "invalid_request"  # the provider calls the request malformed
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RECIPIENT_REFUSED = "recipient_refused"  # the mail server refused the address
    UNSUBSCRIBED = "unsubscribed"  # the number opted out of SMS (STOP); Herald removes it
    INVALID_NUMBER = "invalid_number"
    NOT_MOBILE = "not_mobile"
    UNREACHABLE_NUMBER = "unreachable_number"
    REGION_NOT_ENABLED = "region_not_enabled"
    INVALID_SENDER = "invalid_sender"
    UNREGISTERED = "unregistered"  # the push service says the app left the device; Herald removes the token
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - a reason: the push service calls the device token bad
    TOKEN_NOT_FOR_TOPIC = "token_not_for_topic"  # noqa: S105 - a reason: an APNs token of another app
    SENDER_ID_MISMATCH = "sender_id_mismatch"  # an FCM token of another Firebase project
    UNSUPPORTED_TOKEN = "unsupported_token"  # noqa: S105 - a reason: no provider takes this kind of token


def reason_of(error: BaseException) -> RejectReason | DeliveryReason:
    """The dead-letter reason for an error: its own when it is one of these, else `internal_error`."""
    reason = str(getattr(error, "reason", ""))
    for group in (RejectReason, DeliveryReason):
        try:
            return group(reason)
        except ValueError:
            continue
    return RejectReason.INTERNAL_ERROR
