"""Who is connecting: HMAC-signed JWTs with a required `exp` and `sub` (the user id), issued and verified."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Final

import jwt
from pydantic import TypeAdapter, ValidationError

from schemas.events import UserId

HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})

# RFC 7518 section 3.2: an HMAC key must be at least as long as the hash output.
MIN_SECRET_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}

_user_id: TypeAdapter[str] = TypeAdapter(UserId)


class AuthReason(StrEnum):
    """Why a connection was refused: the close reason sent to the client and the metric's `reason` label."""

    MISSING_TOKEN = "missing_token"  # noqa: S105 - a reason, not a credential
    INVALID_TOKEN = "invalid_token"  # noqa: S105
    EXPIRED_TOKEN = "expired_token"  # noqa: S105


class AuthError(Exception):
    """The token is missing, invalid or expired; permanent for this token (reconnecting needs a new one)."""

    retriable = False

    def __init__(self, reason: AuthReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


def bearer_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token from an `Authorization: Bearer` header, else from `?token=` (browsers cannot set headers)."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return None
    return query_token or None


def verify_token(token: str | None, *, secret: str, algorithm: str) -> str:
    """The user id (`sub`) of a valid token; raises AuthError otherwise.

    Only `algorithm` is accepted, so `alg: none` and tokens signed for another algorithm are refused.
    """
    if not token:
        raise AuthError(AuthReason.MISSING_TOKEN)
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[algorithm],
            options={"require": ["exp", "sub"], "enforce_minimum_key_length": True},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(AuthReason.EXPIRED_TOKEN) from None
    except jwt.InvalidTokenError:
        raise AuthError(AuthReason.INVALID_TOKEN) from None
    try:
        # A `sub` that could never be a recipient would authenticate a socket that never receives anything.
        return _user_id.validate_python(claims["sub"], strict=True)
    except ValidationError:
        raise AuthError(AuthReason.INVALID_TOKEN) from None


def issue_token(
    secret: str, user_id: str, ttl_seconds: int, *, algorithm: str = "HS256", now: float | None = None
) -> str:
    """A token for `user_id` valid for `ttl_seconds`, for the `herald token` command and tests."""
    issued_at = int(time.time() if now is None else now)
    claims = {"sub": user_id, "iat": issued_at, "exp": issued_at + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=algorithm)
