"""Token verification: what the gateway accepts and why it refuses the rest."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from gateway.auth import AuthError, AuthReason, bearer_token, issue_token, verify_token

# 64 bytes: long enough for HS512 too, so PyJWT's short-key warning (an error under pytest) never fires.
SECRET = "s" * 64
OTHER_SECRET = "o" * 64


def _b64(part: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _refusal(token: str | None, *, algorithm: str = "HS256") -> AuthReason:
    with pytest.raises(AuthError) as caught:
        verify_token(token, secret=SECRET, algorithm=algorithm)
    return caught.value.reason


def test_a_valid_token_gives_its_subject() -> None:
    token = issue_token(SECRET, "user-1", 60)
    assert verify_token(token, secret=SECRET, algorithm="HS256") == "user-1"


def test_each_hmac_algorithm_verifies_its_own_tokens() -> None:
    for algorithm in ("HS256", "HS384", "HS512"):
        token = issue_token(SECRET, "user-1", 60, algorithm=algorithm)
        assert verify_token(token, secret=SECRET, algorithm=algorithm) == "user-1"


@pytest.mark.parametrize("token", [None, ""])
def test_a_missing_token_is_refused(token: str | None) -> None:
    assert _refusal(token) is AuthReason.MISSING_TOKEN


def test_a_bad_signature_is_refused() -> None:
    assert _refusal(issue_token(OTHER_SECRET, "user-1", 60)) is AuthReason.INVALID_TOKEN


def test_garbage_is_refused() -> None:
    assert _refusal("not.a.jwt") is AuthReason.INVALID_TOKEN


def test_an_expired_token_is_refused_as_expired() -> None:
    token = issue_token(SECRET, "user-1", 60, now=time.time() - 120)
    assert _refusal(token) is AuthReason.EXPIRED_TOKEN


def test_alg_none_is_refused() -> None:
    claims = {"sub": "user-1", "exp": int(time.time()) + 60}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    assert _refusal(unsigned) is AuthReason.INVALID_TOKEN


def test_a_token_for_another_algorithm_is_refused() -> None:
    token = issue_token(SECRET, "user-1", 60, algorithm="HS512")
    assert _refusal(token, algorithm="HS256") is AuthReason.INVALID_TOKEN


def test_a_token_without_sub_is_refused() -> None:
    token = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert _refusal(token) is AuthReason.INVALID_TOKEN


def test_a_token_without_exp_is_refused() -> None:
    token = jwt.encode({"sub": "user-1"}, SECRET, algorithm="HS256")
    assert _refusal(token) is AuthReason.INVALID_TOKEN


@pytest.mark.parametrize("subject", ["", "two words", 42])
def test_a_sub_that_cannot_be_a_user_id_is_refused(subject: object) -> None:
    token = jwt.encode({"sub": subject, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert _refusal(token) is AuthReason.INVALID_TOKEN


def test_the_header_wins_over_the_query_string() -> None:
    assert bearer_token("Bearer from-header", "from-query") == "from-header"
    assert bearer_token("bearer  spaced ", None) == "spaced"
    assert bearer_token(None, "from-query") == "from-query"
    assert bearer_token(None, "") is None
    # Another scheme is not silently replaced by the query token.
    assert bearer_token("Basic dXNlcjpwdw==", "from-query") is None
