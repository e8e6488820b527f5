"""SendGrid's side of the Signed Event Webhook: a P-256 key pair, event batches as SendGrid writes them, and
the signature headers (ECDSA with SHA-256 over `timestamp + body`, base64 DER)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


@dataclass
class SendGridSigner:
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def public_key_b64(self) -> str:
        """The verification key as SendGrid's settings page shows it: base64 of the DER public key."""
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    @property
    def public_key_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def signature(self, body: bytes, timestamp: int | str) -> str:
        signed = str(timestamp).encode() + body
        return base64.b64encode(self.private_key.sign(signed, ec.ECDSA(hashes.SHA256()))).decode()

    def headers(self, body: bytes, timestamp: int | str) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: self.signature(body, timestamp),
            TIMESTAMP_HEADER: str(timestamp),
        }


def batch(*events: dict[str, Any]) -> bytes:
    """A batch as SendGrid posts it: a JSON array, compact."""
    return json.dumps(list(events), separators=(",", ":")).encode()


def bounce(email: str, recipient: str | None, *, type: str = "bounce", **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "email": email,
        "timestamp": 1_795_000_000,
        "event": "bounce",
        "type": type,
        "status": "5.1.1" if type == "bounce" else "4.0.0",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        "sg_event_id": f"sg-event-{email}-{type}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "herald_notification_id": "ntf_0123456789abcdef0123456789abcdef",
        **extra,
    }
    if recipient is not None:
        event["herald_recipient"] = recipient
    return event


def dropped(email: str, recipient: str | None, reason: str = "Bounced Address") -> dict[str, Any]:
    event: dict[str, Any] = {
        "email": email,
        "timestamp": 1_795_000_000,
        "event": "dropped",
        "reason": reason,
        "sg_event_id": f"sg-event-{email}-dropped",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.1",
    }
    if recipient is not None:
        event["herald_recipient"] = recipient
    return event


def event(kind: str, email: str, recipient: str | None = None) -> dict[str, Any]:
    """Any other event (delivered, deferred, open, …)."""
    found: dict[str, Any] = {"email": email, "timestamp": 1_795_000_000, "event": kind}
    if recipient is not None:
        found["herald_recipient"] = recipient
    return found
