"""What the dispatcher's handlers share: the services built at start-up and the caller's identity.

Its own module so that every router (users and tokens in ``dispatcher.app``, groups,
friends) depends on the same two things without importing the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import aiomysql
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis

from auth.tokens import TokenClaims, TokenService
from push.publisher import SystemPublisher
from schemas.errors import AuthError, ErrorCode
from store.friends import FriendStore
from store.groups import GroupStore
from store.login_attempts import LoginAttempts
from store.register import RegisterStore
from store.users import UserStore


@dataclass
class Services:
    """What the handlers use; built by the app's lifespan."""

    redis: Redis
    pool: aiomysql.Pool
    register: RegisterStore
    users: UserStore
    tokens: TokenService
    login_attempts: LoginAttempts
    groups: GroupStore
    friends: FriendStore
    system: SystemPublisher


def services_of(request: Request) -> Services:
    """The running app's services."""
    services: Services = request.app.state.services
    return services


_bearer = HTTPBearer(auto_error=False, description="a token from POST /v1/tokens")


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenClaims:
    """The caller, proven by ``Authorization: Bearer <token>``; AuthError otherwise."""
    if credentials is None:
        raise AuthError(ErrorCode.BAD_TOKEN, "missing 'Authorization: Bearer <token>' header")
    return await services_of(request).tokens.verify(credentials.credentials)


Authenticated = Annotated[TokenClaims, Depends(authenticated)]
# The errors every endpoint behind Authenticated may answer.
TOKEN_ERRORS = (ErrorCode.BAD_TOKEN, ErrorCode.TOKEN_EXPIRED, ErrorCode.TOKEN_REVOKED)
