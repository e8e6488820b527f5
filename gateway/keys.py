"""Verification keys from the settings: a shared HMAC secret, a PEM public key, or a JWKS file."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from gateway.auth import MIN_SECRET_BYTES, AuthError, TokenVerifier
from kernel.errors import ConfigurationError
from kernel.settings import Settings
from schemas.websocket import AuthReason


class StaticKey:
    """One key for every token: the HMAC secret or a public key."""

    def __init__(self, key: Any) -> None:
        self._key = key

    def key_for(self, header: Mapping[str, Any]) -> Any:
        return self._key


class JwksFile:
    """Keys from a JWKS document on disk, chosen by the token's `kid`; re-read when the file changes, so
    keys can be rotated by replacing the file (write the new one beside it, then rename)."""

    def __init__(self, path: Path, algorithm: str) -> None:
        self._path = path
        self._algorithm = algorithm
        self._lock = threading.Lock()
        self._mtime_ns = -1
        self._keys: dict[str | None, Any] = {}
        self._reload(required=True)

    def key_for(self, header: Mapping[str, Any]) -> Any:
        self._reload(required=False)
        kid = header.get("kid")
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if not isinstance(kid, str) or kid not in self._keys:
            raise AuthError(AuthReason.UNKNOWN_KEY)
        return self._keys[kid]

    def _reload(self, *, required: bool) -> None:
        with self._lock:
            try:
                mtime_ns = os.stat(self._path).st_mtime_ns
                if mtime_ns == self._mtime_ns:
                    return
                self._keys = _parse_jwks(self._path.read_text(encoding="utf-8"), self._algorithm)
                self._mtime_ns = mtime_ns
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                if required:
                    raise ConfigurationError(f"HERALD_JWT_JWKS_FILE: {exc}") from None
                # A broken replacement keeps the keys already loaded rather than refusing everyone.


def _parse_jwks(text: str, algorithm: str) -> dict[str | None, Any]:
    document = json.loads(text)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (an object with a 'keys' array)")
    keys: dict[str | None, Any] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("alg", algorithm) != algorithm:
            continue
        jwk = jwt.PyJWK(entry, algorithm=algorithm)
        keys[entry.get("kid")] = jwk.key
    if not keys:
        raise ValueError(f"no signing key for {algorithm}")
    return keys


def verifier_from_settings(settings: Settings) -> TokenVerifier:
    """The verifier the settings describe; ConfigurationError names the setting at fault."""
    public_sources = [
        name
        for name, value in (
            ("HERALD_JWT_PUBLIC_KEY_FILE", settings.jwt_public_key_file),
            ("HERALD_JWT_JWKS_FILE", settings.jwt_jwks_file),
        )
        if value is not None
    ]
    if len(public_sources) > 1:
        raise ConfigurationError(f"{' and '.join(public_sources)}: set one of them, not both")
    if public_sources and settings.jwt_secret is not None:
        raise ConfigurationError(f"HERALD_JWT_SECRET and {public_sources[0]}: set one of them, not both")
    resolver: StaticKey | JwksFile
    if settings.jwt_jwks_file is not None:
        algorithm = settings.jwt_public_key_algorithm
        resolver = JwksFile(settings.jwt_jwks_file, algorithm)
    elif settings.jwt_public_key_file is not None:
        algorithm = settings.jwt_public_key_algorithm
        resolver = StaticKey(_public_key(settings.jwt_public_key_file, algorithm))
    else:
        algorithm = settings.jwt_algorithm
        resolver = StaticKey(jwt_secret(settings))
    return TokenVerifier(
        resolver,
        algorithm,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway_seconds=settings.jwt_leeway_seconds,
    )


def _public_key(path: Path, algorithm: str) -> Any:
    try:
        pem = path.read_bytes()
        key = get_default_algorithms()[algorithm].prepare_key(pem)
    except (OSError, jwt.PyJWTError, ValueError) as exc:
        raise ConfigurationError(f"HERALD_JWT_PUBLIC_KEY_FILE: not a {algorithm} public key: {exc}") from None
    if hasattr(key, "private_bytes"):
        # The gateway only verifies; a private key on its disk is one more place for it to leak from.
        raise ConfigurationError("HERALD_JWT_PUBLIC_KEY_FILE: holds a private key; give the public key only")
    return key


def jwt_secret(settings: Settings) -> str:
    """The JWT secret, or ConfigurationError if it is unset or too short for the configured algorithm."""
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret is not None else ""
    if not secret:
        raise ConfigurationError(
            "HERALD_JWT_SECRET: must be set for the gateway to verify client tokens "
            "(or set HERALD_JWT_PUBLIC_KEY_FILE or HERALD_JWT_JWKS_FILE)"
        )
    minimum = MIN_SECRET_BYTES[settings.jwt_algorithm]
    if len(secret.encode()) < minimum:
        raise ConfigurationError(
            f"HERALD_JWT_SECRET: must be at least {minimum} bytes for {settings.jwt_algorithm} (RFC 7518 3.2)"
        )
    return secret
