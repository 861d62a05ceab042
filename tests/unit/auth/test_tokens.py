"""Tokens: only an untampered, unexpired HS256 token of ours proves who the user is."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest

from auth.tokens import ALGORITHM, ISSUER, TokenService
from config.settings import Settings
from schemas.errors import AuthError, ErrorCode

SECRET = "unit-test-secret-unit-test-secret-0123456789"


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(Settings(jwt_secret=SECRET, token_ttl_s=3600))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "alice",
        "iat": now,
        "exp": now + 600,
        "jti": "j-1",
        "iss": ISSUER,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _hand_signed(header: dict[str, object], claims: dict[str, object], secret: str) -> str:
    """A token built by hand, as an attacker would, signed with HMAC-SHA256."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _assert_refused(tokens: TokenService, token: str, code: ErrorCode) -> None:
    with pytest.raises(AuthError) as raised:
        tokens.decode(token)
    assert raised.value.code is code


async def test_issued_token_verifies_as_its_user(tokens: TokenService) -> None:
    issued = tokens.issue("alice")
    claims = await tokens.verify(issued.token)
    assert claims.user == "alice"
    assert claims.jti == issued.jti
    assert claims.expires_at == issued.expires_at
    assert 3590 <= issued.expires_at - time.time() <= 3600


def test_each_token_has_its_own_id(tokens: TokenService) -> None:
    assert tokens.issue("alice").jti != tokens.issue("alice").jti


def test_token_carries_the_agreed_claims(tokens: TokenService) -> None:
    token = tokens.issue("bob").token
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="mmim")
    assert set(claims) == {"sub", "iat", "exp", "jti", "iss"}
    assert claims["sub"] == "bob"


def test_expired_token_is_refused_as_expired() -> None:
    an_hour_ago = time.time() - 3600
    issuer = TokenService(Settings(jwt_secret=SECRET, token_ttl_s=60), clock=lambda: an_hour_ago)
    _assert_refused(issuer, issuer.issue("alice").token, ErrorCode.TOKEN_EXPIRED)


def test_alg_none_is_refused(tokens: TokenService) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    unsigned = f"{header}.{_b64(json.dumps(_claims()).encode())}."
    _assert_refused(tokens, unsigned, ErrorCode.BAD_TOKEN)
    # Even with a (meaningless) signature attached.
    _assert_refused(tokens, unsigned + _b64(b"sig"), ErrorCode.BAD_TOKEN)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_hs512_with_our_secret_is_refused(tokens: TokenService) -> None:
    token = jwt.encode(_claims(), SECRET, algorithm="HS512")
    _assert_refused(tokens, token, ErrorCode.BAD_TOKEN)


def test_rs256_header_with_hmac_signature_is_refused(tokens: TokenService) -> None:
    # Algorithm confusion: claims RS256 but is really HMAC-signed with our secret.
    token = _hand_signed({"alg": "RS256", "typ": "JWT"}, _claims(), SECRET)
    _assert_refused(tokens, token, ErrorCode.BAD_TOKEN)


def test_the_same_forgery_with_hs256_header_would_pass(tokens: TokenService) -> None:
    # Control for the test above: the hand-made encoding itself is valid.
    token = _hand_signed({"alg": ALGORITHM, "typ": "JWT"}, _claims(), SECRET)
    assert tokens.decode(token).user == "alice"


def test_tampered_claims_are_refused(tokens: TokenService) -> None:
    header, _, signature = tokens.issue("alice").token.split(".")
    forged_claims = _b64(json.dumps(_claims(sub="mallory")).encode())
    _assert_refused(tokens, f"{header}.{forged_claims}.{signature}", ErrorCode.BAD_TOKEN)


def test_token_signed_with_another_secret_is_refused(tokens: TokenService) -> None:
    token = jwt.encode(_claims(), "another-secret-another-secret-0123456789", algorithm="HS256")
    _assert_refused(tokens, token, ErrorCode.BAD_TOKEN)


@pytest.mark.parametrize("missing", ["sub", "iat", "exp", "jti", "iss"])
def test_token_missing_a_claim_is_refused(tokens: TokenService, missing: str) -> None:
    claims = _claims()
    del claims[missing]
    _assert_refused(tokens, jwt.encode(claims, SECRET, algorithm="HS256"), ErrorCode.BAD_TOKEN)


def test_foreign_issuer_or_bad_subject_is_refused(tokens: TokenService) -> None:
    foreign = jwt.encode(_claims(iss="someone-else"), SECRET, algorithm="HS256")
    _assert_refused(tokens, foreign, ErrorCode.BAD_TOKEN)
    bad_subject = jwt.encode(_claims(sub="p:alice:bob"), SECRET, algorithm="HS256")
    _assert_refused(tokens, bad_subject, ErrorCode.BAD_TOKEN)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x.y.z", "..", "é.é.é"])
def test_garbage_is_refused(tokens: TokenService, garbage: str) -> None:
    _assert_refused(tokens, garbage, ErrorCode.BAD_TOKEN)


def test_tampered_expired_token_is_bad_not_just_expired(tokens: TokenService) -> None:
    # A forged token must not learn anything from "expired" vs "bad".
    token = jwt.encode(_claims(exp=int(time.time()) - 3600), "wrong-secret-wrong-secret-0123456789")
    _assert_refused(tokens, token, ErrorCode.BAD_TOKEN)
