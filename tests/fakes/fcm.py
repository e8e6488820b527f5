"""A fake FCM HTTP v1 API (`POST /v1/projects/{project}/messages:send`) and its OAuth token endpoint."""

from __future__ import annotations

import itertools
import re
import threading
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.http import RecordedRequest, Reply, ScriptedHttpServer

TOKEN_PATH = "/token"
_SEND = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
MESSAGING_SCOPE = (
    "https://www.googleapis.com/auth/firebase"  # firebase-admin asks for this, not firebase.messaging
)
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

# FCM error code → (HTTP status, canonical status), as FCM v1 answers them.
FCM_ERRORS = {
    "UNREGISTERED": (404, "NOT_FOUND"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED"),
}


def fcm_error(fcm_code: str, message: str = "refused", headers: dict[str, str] | None = None) -> Reply:
    status, canonical = FCM_ERRORS[fcm_code]
    payload = {
        "error": {
            "code": status,
            "message": message,
            "status": canonical,
            "details": [{"@type": FCM_ERROR_TYPE, "errorCode": fcm_code}],
        }
    }
    return Reply.json(status, payload, headers)


def make_service_account(token_uri: str, project_id: str = "herald-test") -> tuple[dict[str, str], bytes]:
    """A service-account dict with a fresh RSA key whose `token_uri` is `token_uri`, and the public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    account = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "test-key-1",
        "private_key": private_pem,
        "client_email": f"herald@{project_id}.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    return account, public_pem


class FakeFcm(ScriptedHttpServer):
    """Answers sends with a message name; `refuse(target, reply)` makes one token or fid always fail.

    Token requests are checked against `public_key` (the service account's JWT must verify) and are
    never subject to `fail_next` / `hang_next`."""

    def __init__(self, project_id: str = "herald-test") -> None:
        super().__init__()
        self.project_id = project_id
        self.public_key: bytes | None = None
        self._ids = itertools.count(1)
        self._refusals: dict[str, Reply] = {}
        self._refusals_lock = threading.Lock()

    @property
    def token_uri(self) -> str:
        return self.url + TOKEN_PATH

    @property
    def sends(self) -> list[RecordedRequest]:
        return [r for r in self.requests if _SEND.match(r.path)]

    @property
    def token_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == TOKEN_PATH]

    def refuse(self, target: str, reply: Reply) -> None:
        with self._refusals_lock:
            self._refusals[target] = reply

    def scriptable(self, request: RecordedRequest) -> bool:
        return request.path != TOKEN_PATH

    def answer(self, request: RecordedRequest) -> Reply:
        if request.path == TOKEN_PATH:
            return self._token(request)
        match = _SEND.match(request.path)
        if request.method != "POST" or match is None or match["project"] != self.project_id:
            return Reply.json(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})
        if not (request.headers.get("authorization") or "").startswith("Bearer fake-access-"):
            return Reply.json(
                401, {"error": {"code": 401, "message": "no credentials", "status": "UNAUTHENTICATED"}}
            )
        message: dict[str, Any] = request.json()["message"]
        target = message.get("token") or message.get("fid") or ""
        with self._refusals_lock:
            refusal = self._refusals.get(target)
        if refusal is not None:
            return refusal
        return Reply.json(200, {"name": f"projects/{self.project_id}/messages/{next(self._ids)}"})

    def _token(self, request: RecordedRequest) -> Reply:
        form = request.form()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return Reply.json(400, {"error": "unsupported_grant_type"})
        if self.public_key is not None:
            try:
                # google-auth signs for Google's token endpoint whatever the token_uri says.
                claims = jwt.decode(
                    form.get("assertion", ""),
                    self.public_key,
                    algorithms=["RS256"],
                    audience=GOOGLE_TOKEN_AUDIENCE,
                )
            except jwt.PyJWTError as exc:
                return Reply.json(400, {"error": "invalid_grant", "error_description": str(exc)})
            if MESSAGING_SCOPE not in str(claims.get("scope", "")).split():
                return Reply.json(400, {"error": "invalid_scope"})
        return Reply.json(
            200,
            {
                "access_token": f"fake-access-{len(self.token_requests)}",
                "expires_in": 3600,
                "token_type": "Bearer",
            },
        )
