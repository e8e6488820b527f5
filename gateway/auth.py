"""Who is connecting: JWT verification (one configured algorithm, `exp` and `sub` required), and issuing."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import jwt
from pydantic import TypeAdapter, ValidationError

from schemas.events import UserId
from schemas.websocket import AuthReason

HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})

# RFC 7518 section 3.2: an HMAC key must be at least as long as the hash output.
MIN_SECRET_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}

_user_id: TypeAdapter[str] = TypeAdapter(UserId)


class AuthError(Exception):
    """The connection may not proceed; permanent for this token (reconnecting needs a new one)."""

    retriable = False

    def __init__(self, reason: AuthReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified token: whose it is and until when (seconds since the epoch) it may be used."""

    user_id: str
    expires_at: float


class KeyResolver(Protocol):
    """Finds the key that should have signed a token, from its (unverified) header."""

    def key_for(self, header: Mapping[str, Any]) -> Any:
        """The verification key; raises AuthError(UNKNOWN_KEY) when there is none for this header."""


def bearer_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token from an `Authorization: Bearer` header, else from `?token=` (browsers cannot set headers)."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return None
    return query_token or None


class TokenVerifier:
    """Verifies tokens signed with exactly one algorithm; `audience`/`issuer` are checked when set."""

    def __init__(
        self,
        keys: KeyResolver,
        algorithm: str,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        leeway_seconds: float = 0.0,
    ) -> None:
        self._keys = keys
        self.algorithm = algorithm
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway_seconds
        required = ["exp", "sub"]
        required += ["aud"] if audience is not None else []
        required += ["iss"] if issuer is not None else []
        self._options: Any = {"require": required, "enforce_minimum_key_length": True}

    def verify(self, token: str | None) -> Identity:
        if not token:
            raise AuthError(AuthReason.MISSING_TOKEN)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError(AuthReason.MALFORMED_TOKEN) from None
        # Checked before any key is chosen, so `alg: none` or an HMAC token against a public key never
        # reaches a verification routine.
        if header.get("alg") != self.algorithm:
            raise AuthError(AuthReason.ALGORITHM_NOT_ALLOWED)
        key = self._keys.key_for(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(AuthReason.EXPIRED_TOKEN) from None
        except jwt.InvalidSignatureError:
            raise AuthError(AuthReason.BAD_SIGNATURE) from None
        except jwt.InvalidKeyError:
            raise AuthError(AuthReason.UNKNOWN_KEY) from None
        except jwt.DecodeError:
            raise AuthError(AuthReason.MALFORMED_TOKEN) from None
        except jwt.InvalidTokenError:
            raise AuthError(AuthReason.INVALID_CLAIMS) from None
        expires_at = claims["exp"]
        if type(expires_at) not in (int, float):
            raise AuthError(AuthReason.INVALID_CLAIMS)
        try:
            # A `sub` that could never be a recipient would authenticate a socket that never receives a thing.
            user_id = _user_id.validate_python(claims["sub"], strict=True)
        except ValidationError:
            raise AuthError(AuthReason.INVALID_CLAIMS) from None
        return Identity(user_id, float(expires_at))


def issue_token(
    key: Any,
    user_id: str,
    ttl_seconds: int,
    *,
    algorithm: str = "HS256",
    now: float | None = None,
    claims: Mapping[str, Any] | None = None,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """A token for `user_id` valid for `ttl_seconds`, for the `herald token` command and tests."""
    issued_at = int(time.time() if now is None else now)
    payload = {"sub": user_id, "iat": issued_at, "exp": issued_at + ttl_seconds, **(claims or {})}
    return jwt.encode(payload, key, algorithm=algorithm, headers=dict(headers) if headers else None)
