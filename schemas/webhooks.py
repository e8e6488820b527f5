"""What the provider webhooks report of each request and each bounce: the values of their metrics' labels."""

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
