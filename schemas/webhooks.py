"""What the provider webhooks report of each request, each bounce and each delivery receipt: the values of
their metrics' labels."""

from __future__ import annotations

from enum import StrEnum


class WebhookOutcome(StrEnum):
    """What came of a webhook request."""

    ACCEPTED = "accepted"
    REFUSED = "refused"  # see WebhookRefusal; the provider is answered 4xx
    UNAVAILABLE = "unavailable"  # the broker did not take what it asked for; answered 503, so it retries


class WebhookRefusal(StrEnum):
    """Why a request is not taken as a recent, intact batch from the provider."""

    MISSING_SIGNATURE = "missing_signature"
    MISSING_TIMESTAMP = "missing_timestamp"
    MALFORMED_SIGNATURE = "malformed_signature"
    MALFORMED_TIMESTAMP = "malformed_timestamp"
    BAD_SIGNATURE = "bad_signature"
    STALE_TIMESTAMP = "stale_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    MALFORMED_BODY = "malformed_body"
    TOO_LARGE = "too_large"
    INCOMPLETE_BODY = "incomplete_body"  # the body did not arrive whole before the read deadline
    REPLAYED = "replayed"  # a signed request already taken within its tolerance window (answered 409)


class BounceEvent(StrEnum):
    """The provider's events that end an address: a hard bounce, or a send dropped as a bounced address."""

    BOUNCE = "bounce"
    DROPPED = "dropped"


class BounceOutcome(StrEnum):
    REMOVAL_REQUESTED = "removal_requested"  # the address is removed from the recipient's profile
    UNATTRIBUTED = "unattributed"  # the event does not say whose address it is


class ReceiptOutcome(StrEnum):
    """What came of one delivery receipt (a Twilio status callback, a SendGrid event other than a bounce's
    removal)."""

    RECORDED = "recorded"  # a status record was written to herald.status
    IGNORED = "ignored"  # a report Herald writes nothing for (Twilio's queued or sent, SendGrid's processed)
    SUPERSEDED = "superseded"  # a replay, or no stronger than a report already written for the notification
    UNATTRIBUTED = "unattributed"  # it does not carry Herald's notification id, event id and recipient
