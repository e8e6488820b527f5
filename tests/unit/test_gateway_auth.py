"""Token verification: what the gateway accepts and why it refuses the rest, for each kind of key."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth import AuthError, TokenVerifier, bearer_token, issue_token
from gateway.keys import StaticKey, verifier_from_settings
from kernel.errors import ConfigurationError
from kernel.settings import Settings
from schemas.websocket import AuthReason

# 64 bytes: long enough for HS512 too, so PyJWT's short-key warning (an error under pytest) never fires.
SECRET = "s" * 64
OTHER_SECRET = "o" * 64
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _b64(part: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _hmac(algorithm: str = "HS256", **options: Any) -> TokenVerifier:
    return TokenVerifier(StaticKey(SECRET), algorithm, **options)


def _refusal(token: str | None, verifier: TokenVerifier | None = None) -> AuthReason:
    with pytest.raises(AuthError) as caught:
        (verifier or _hmac()).verify(token)
    return caught.value.reason


def _settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def _pem(private_key: Any, path: Path) -> Path:
    path.write_bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_a_valid_token_gives_its_subject_and_expiry() -> None:
    now = int(time.time())
    identity = _hmac().verify(issue_token(SECRET, "user-1", 60, now=now))
    assert (identity.user_id, identity.expires_at) == ("user-1", now + 60)


def test_each_hmac_algorithm_verifies_its_own_tokens() -> None:
    for algorithm in ("HS256", "HS384", "HS512"):
        token = issue_token(SECRET, "user-1", 60, algorithm=algorithm)
        assert _hmac(algorithm).verify(token).user_id == "user-1"


@pytest.mark.parametrize("token", [None, ""])
def test_a_missing_token_is_refused(token: str | None) -> None:
    assert _refusal(token) is AuthReason.MISSING_TOKEN


def test_a_bad_signature_is_refused() -> None:
    assert _refusal(issue_token(OTHER_SECRET, "user-1", 60)) is AuthReason.BAD_SIGNATURE


def test_garbage_is_refused_as_malformed() -> None:
    assert _refusal("not.a.jwt") is AuthReason.MALFORMED_TOKEN


def test_an_expired_token_is_refused_as_expired() -> None:
    assert _refusal(issue_token(SECRET, "user-1", 60, now=time.time() - 120)) is AuthReason.EXPIRED_TOKEN


def test_alg_none_is_refused() -> None:
    claims = {"sub": "user-1", "exp": int(time.time()) + 60}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    assert _refusal(unsigned) is AuthReason.ALGORITHM_NOT_ALLOWED


def test_a_token_for_another_algorithm_is_refused() -> None:
    token = issue_token(SECRET, "user-1", 60, algorithm="HS512")
    assert _refusal(token) is AuthReason.ALGORITHM_NOT_ALLOWED


def test_an_hmac_token_signed_with_the_public_key_is_refused(tmp_path: Path) -> None:
    # The classic confusion attack: the public key (known to all) used as an HMAC secret.
    pem = _pem(RSA_KEY, tmp_path / "public.pem")
    verifier = verifier_from_settings(_settings(jwt_public_key_file=pem))
    forged = jwt.encode({"sub": "user-1", "exp": int(time.time()) + 60}, "x" * 64, algorithm="HS256")
    assert _refusal(forged, verifier) is AuthReason.ALGORITHM_NOT_ALLOWED


@pytest.mark.parametrize(
    "claims", [{"exp": 4_000_000_000}, {"sub": "user-1"}, {"sub": "", "exp": 4_000_000_000}]
)
def test_missing_or_unusable_claims_are_refused(claims: dict[str, Any]) -> None:
    assert _refusal(jwt.encode(claims, SECRET, algorithm="HS256")) is AuthReason.INVALID_CLAIMS


def test_audience_and_issuer_are_checked_when_configured() -> None:
    verifier = _hmac(audience="herald", issuer="https://id.example.com")
    good = {"aud": "herald", "iss": "https://id.example.com"}
    assert verifier.verify(issue_token(SECRET, "u", 60, claims=good)).user_id == "u"
    for claims in ({"aud": "other", "iss": good["iss"]}, {"aud": "herald", "iss": "x"}, {"aud": "herald"}):
        assert _refusal(issue_token(SECRET, "u", 60, claims=claims), verifier) is AuthReason.INVALID_CLAIMS


def test_an_rsa_public_key_verifies_rs256_tokens(tmp_path: Path) -> None:
    pem = _pem(RSA_KEY, tmp_path / "public.pem")
    verifier = verifier_from_settings(_settings(jwt_public_key_file=pem, jwt_public_key_algorithm="RS256"))
    assert verifier.verify(issue_token(RSA_KEY, "u", 60, algorithm="RS256")).user_id == "u"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _refusal(issue_token(other, "u", 60, algorithm="RS256"), verifier) is AuthReason.BAD_SIGNATURE


def test_a_jwks_file_verifies_es256_tokens_by_kid_and_is_reread(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"

    def write(*keys: tuple[str, Any]) -> None:
        entries = []
        for kid, key in keys:
            entry = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            entries.append({**entry, "kid": kid, "alg": "ES256", "use": "sig"})
        jwks.write_text(json.dumps({"keys": entries}))

    write(("k1", EC_KEY))
    verifier = verifier_from_settings(_settings(jwt_jwks_file=jwks, jwt_public_key_algorithm="ES256"))
    token = issue_token(EC_KEY, "u", 60, algorithm="ES256", headers={"kid": "k1"})
    assert verifier.verify(token).user_id == "u"
    rotated = ec.generate_private_key(ec.SECP256R1())
    new_token = issue_token(rotated, "u", 60, algorithm="ES256", headers={"kid": "k2"})
    assert _refusal(new_token, verifier) is AuthReason.UNKNOWN_KEY
    write(("k1", EC_KEY), ("k2", rotated))
    os.utime(jwks, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert verifier.verify(new_token).user_id == "u"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"jwt_secret": SECRET, "jwt_public_key_file": "x.pem"},
            "HERALD_JWT_SECRET and HERALD_JWT_PUBLIC_KEY_FILE",
        ),
        ({"jwt_public_key_file": "/nonexistent.pem"}, "HERALD_JWT_PUBLIC_KEY_FILE"),
        ({"jwt_jwks_file": "/nonexistent.json"}, "HERALD_JWT_JWKS_FILE"),
    ],
)
def test_bad_key_settings_fail_naming_the_setting(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        verifier_from_settings(_settings(**overrides))


def test_a_private_key_file_is_refused(tmp_path: Path) -> None:
    pem = tmp_path / "private.pem"
    pem.write_bytes(
        RSA_KEY.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ConfigurationError, match="private key"):
        verifier_from_settings(_settings(jwt_public_key_file=pem))


def test_the_header_wins_over_the_query_string() -> None:
    assert bearer_token("Bearer from-header", "from-query") == "from-header"
    assert bearer_token("bearer  spaced ", None) == "spaced"
    assert bearer_token(None, "from-query") == "from-query"
    assert bearer_token(None, "") is None
    # Another scheme is not silently replaced by the query token.
    assert bearer_token("Basic dXNlcjpwdw==", "from-query") is None
