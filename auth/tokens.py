"""Access tokens: JWT signed with HS256, checked against the register store's revocations.

Claims: ``sub`` (user id), ``iat``, ``exp``, ``jti`` (random id, the handle for
revocation) and ``iss`` = ``"mmim"``. Only HS256 is accepted: a token whose header
names any other algorithm (``none``, HS512, RS256, ...) is refused before its
signature is even looked at, so no algorithm-confusion trick can get through.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from config.settings import Settings
from schemas.conversations import ID_PATTERN
from schemas.errors import AuthError, ErrorCode
from store.register import RegisterStore

ALGORITHM = "HS256"
ISSUER = "mmim"
REQUIRED_CLAIMS = ("sub", "iat", "exp", "jti", "iss")
# Tolerated clock difference between the host that issued a token and the one checking it.
LEEWAY_S = 5
_USER_ID = re.compile(ID_PATTERN)


@dataclass(frozen=True)
class IssuedToken:
    """A freshly signed token; ``expires_at`` in Unix seconds."""

    token: str
    jti: str
    expires_at: int


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token proves: who, which token, until when (Unix seconds)."""

    user: str
    jti: str
    expires_at: int

    def remaining_s(self, now: float | None = None) -> float:
        """Seconds of life left (never negative)."""
        return max(0.0, self.expires_at - (time.time() if now is None else now))


class TokenService:
    """Issues and verifies tokens; with a register store, also honours revocations."""

    def __init__(
        self,
        settings: Settings,
        register: RegisterStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = settings.jwt_secret
        self._ttl_s = settings.token_ttl_s
        self._register = register
        self._clock = clock

    def issue(self, user: str) -> IssuedToken:
        """Sign a token for ``user``, valid for ``IM_TOKEN_TTL_S``."""
        now = int(self._clock())
        jti = secrets.token_urlsafe(16)
        expires_at = now + self._ttl_s
        claims = {"sub": user, "iat": now, "exp": expires_at, "jti": jti, "iss": ISSUER}
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token=token, jti=jti, expires_at=expires_at)

    def decode(self, token: str) -> TokenClaims:
        """Check signature, algorithm and claims (not revocation); raise ``AuthError``."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _bad("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise _bad("token algorithm not accepted")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                leeway=LEEWAY_S,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(ErrorCode.TOKEN_EXPIRED, "token expired") from None
        except jwt.InvalidTokenError as error:
            raise _bad(f"invalid token: {error}") from None
        user, jti, expires_at = claims["sub"], claims["jti"], claims["exp"]
        if not isinstance(user, str) or not _USER_ID.match(user):
            raise _bad("invalid token: bad subject")
        if not isinstance(jti, str) or not jti:
            raise _bad("invalid token: bad token id")
        return TokenClaims(user=user, jti=jti, expires_at=int(expires_at))

    async def verify(self, token: str) -> TokenClaims:
        """:meth:`decode`, then refuse revoked tokens (``TOKEN_REVOKED``)."""
        claims = self.decode(token)
        if self._register is not None and await self._register.is_revoked(claims.jti):
            raise AuthError(ErrorCode.TOKEN_REVOKED, "token revoked")
        return claims

    async def revoke(self, claims: TokenClaims) -> None:
        """Revoke a verified token for the rest of its life."""
        if self._register is None:
            raise RuntimeError("revoking tokens needs a register store")
        await self._register.revoke_token(claims.jti, claims.remaining_s(self._clock()))


def _bad(message: str) -> AuthError:
    return AuthError(ErrorCode.BAD_TOKEN, message)
