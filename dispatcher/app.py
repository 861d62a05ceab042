"""The dispatcher's HTTP API: register users, issue and revoke tokens, assign connectors.

Groups and friendships have their own routers (``dispatcher.groups``, ``dispatcher.friends``).

Every error leaves as JSON ``{"code": int, "message": str}`` with the HTTP status of
``schemas.errors.HTTP_STATUS``; request validation failures are 400 ``BAD_REQUEST``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator
from redis.asyncio import Redis

from auth.passwords import (
    MAX_PASSWORD_CHARS,
    check_password_policy,
    hash_password_async,
    needs_rehash,
    verify_password_async,
)
from auth.tokens import TokenService
from config.settings import Settings
from dispatcher.balancing import choose_connector
from dispatcher.dependencies import Authenticated, Services, services_of
from dispatcher.friends import router as friends_router
from dispatcher.groups import router as groups_router
from push.publisher import SystemPublisher
from schemas.errors import AuthError, ErrorCode, ImError
from schemas.http import error_responses, install_error_handlers
from store.backend_errors import BACKEND_ERRORS
from store.friends import FriendStore
from store.groups import GroupStore
from store.login_attempts import LoginAttempts
from store.mysql import close_pool, create_pool
from store.register import RegisterStore
from store.users import UserStore, check_user_id

log = logging.getLogger(__name__)

# Reconnect policy handed to clients: delay = min(max, initial * multiplier^attempt),
# randomised by ±jitter so that clients of a dead connector do not return in lockstep.
BACKOFF_MULTIPLIER = 2.0
BACKOFF_JITTER = 0.5


# --- request and response bodies


class NewUser(BaseModel):
    """Registration: the id and password of a new user."""

    user_id: str = Field(description="1-64 characters: letters, digits, '_', '.', '-'")
    password: str = Field(description="8-256 characters")

    @field_validator("user_id")
    @classmethod
    def _valid_user_id(cls, value: str) -> str:
        try:
            check_user_id(value)
        except ImError as error:
            raise ValueError(error.message) from None
        return value

    @field_validator("password")
    @classmethod
    def _valid_password(cls, value: str) -> str:
        try:
            check_password_policy(value)
        except ImError as error:
            raise ValueError(error.message) from None
        return value


class Credentials(BaseModel):
    """Login: a user id and its password (any mismatch is a 401, not a 400)."""

    user_id: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class UserCreated(BaseModel):
    user_id: str


class TokenIssued(BaseModel):
    token: str = Field(description="JWT (HS256) to present as 'Authorization: Bearer' and at login")
    expires_at: int = Field(description="expiry, Unix time in seconds")


class Backoff(BaseModel):
    """How a client should space its reconnect attempts."""

    initial_ms: int
    max_ms: int
    multiplier: float
    jitter: float = Field(description="each delay is randomised by ± this fraction")


class ConnectorAssignment(BaseModel):
    """The connector a client should open its long connection to."""

    connector_id: str
    host: str
    port: int
    backoff: Backoff


class Health(BaseModel):
    status: str


# --- wiring


def create_app(settings: Settings, *, rng: random.Random | None = None) -> FastAPI:
    """The dispatcher app; Redis and MySQL connections open in its lifespan."""
    retry_after_s = max(1, math.ceil(settings.reconnect_backoff_initial_ms / 1000))
    backoff = Backoff(
        initial_ms=settings.reconnect_backoff_initial_ms,
        max_ms=settings.reconnect_backoff_max_ms,
        multiplier=BACKOFF_MULTIPLIER,
        jitter=BACKOFF_JITTER,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(settings.redis_url)
        pool = await create_pool(settings)
        register = RegisterStore(redis, settings)
        # Friend requests and acceptances reach users as system messages through Kafka.
        system = SystemPublisher(settings)
        await system.start()
        app.state.services = Services(
            redis=redis,
            pool=pool,
            register=register,
            users=UserStore(pool),
            tokens=TokenService(settings, register),
            login_attempts=LoginAttempts(redis, settings),
            groups=GroupStore(pool, redis),
            friends=FriendStore(pool),
            system=system,
        )
        try:
            yield
        finally:
            await system.stop()
            await close_pool(pool)
            await redis.aclose()

    app = FastAPI(
        title="MM-IM dispatcher",
        version="1.0.0",
        summary="Users, tokens, and which connector a client should connect to.",
        lifespan=lifespan,
    )

    install_error_handlers(app, retry_after_s=retry_after_s, unavailable=BACKEND_ERRORS)

    # --- endpoints

    @app.post(
        "/v1/users",
        status_code=status.HTTP_201_CREATED,
        response_model=UserCreated,
        responses=error_responses(ErrorCode.BAD_REQUEST, ErrorCode.USER_EXISTS),
        summary="Register a user",
    )
    async def register_user(body: NewUser, request: Request) -> UserCreated:
        users = services_of(request).users
        # Cheap check first: no argon2 work for an id that is obviously taken.
        if await users.exists(body.user_id):
            raise ImError(ErrorCode.USER_EXISTS, f"user {body.user_id!r} already exists")
        await users.create(body.user_id, await hash_password_async(body.password))
        log.info("registered user %s", body.user_id)
        return UserCreated(user_id=body.user_id)

    @app.post(
        "/v1/tokens",
        response_model=TokenIssued,
        responses=error_responses(
            ErrorCode.BAD_REQUEST, ErrorCode.BAD_CREDENTIALS, ErrorCode.RATE_LIMITED
        ),
        summary="Log in: exchange a user id and password for a token",
        description=(
            "Refused with 429 (and Retry-After) after too many failed passwords for the"
            " user id, or too many attempts from the client's address (docs/configuration.md)."
        ),
    )
    async def issue_token(body: Credentials, request: Request) -> TokenIssued:
        services = services_of(request)
        client_ip = request.client.host if request.client is not None else "unknown"
        await services.login_attempts.admit(body.user_id, client_ip)
        stored = await services.users.password_hash(body.user_id)
        if not await verify_password_async(stored, body.password):
            await services.login_attempts.failed(body.user_id)
            raise AuthError(ErrorCode.BAD_CREDENTIALS, "wrong user id or password")
        await services.login_attempts.succeeded(body.user_id)
        if stored is not None and needs_rehash(stored):
            await services.users.set_password_hash(
                body.user_id, await hash_password_async(body.password)
            )
        issued = services.tokens.issue(body.user_id)
        return TokenIssued(token=issued.token, expires_at=issued.expires_at)

    @app.delete(
        "/v1/tokens/current",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        responses=error_responses(
            ErrorCode.BAD_TOKEN, ErrorCode.TOKEN_EXPIRED, ErrorCode.TOKEN_REVOKED
        ),
        summary="Log out: revoke the presented token",
    )
    async def revoke_token(claims: Authenticated, request: Request) -> Response:
        await services_of(request).tokens.revoke(claims)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @app.get(
        "/v1/connector",
        response_model=ConnectorAssignment,
        responses=error_responses(
            ErrorCode.BAD_REQUEST,
            ErrorCode.BAD_TOKEN,
            ErrorCode.TOKEN_EXPIRED,
            ErrorCode.TOKEN_REVOKED,
            ErrorCode.UNAVAILABLE,
        ),
        summary="Which connector to connect to (least loaded live one)",
    )
    async def assign_connector(
        claims: Authenticated,
        request: Request,
        exclude: Annotated[
            str,
            Query(
                max_length=4096,
                description="comma-separated connector ids the client could not reach",
            ),
        ] = "",
    ) -> ConnectorAssignment:
        skipped = {part.strip() for part in exclude.split(",") if part.strip()}
        live = await services_of(request).register.live_connectors()
        chosen = choose_connector(live, skipped, rng)
        if chosen is None:
            raise ImError(ErrorCode.UNAVAILABLE, "no connector available, retry later")
        return ConnectorAssignment(
            connector_id=chosen.connector_id, host=chosen.host, port=chosen.port, backoff=backoff
        )

    @app.get(
        "/healthz",
        response_model=Health,
        responses=error_responses(ErrorCode.UNAVAILABLE),
        summary="Ready: Redis, MySQL and the Kafka producer answer",
    )
    async def healthz(request: Request) -> Health:
        services = services_of(request)
        if not services.system.started:
            raise ImError(ErrorCode.UNAVAILABLE, "Kafka producer not started")
        try:
            await services.redis.ping()
            async with services.pool.acquire() as conn:
                await conn.ping(reconnect=False)
        except Exception as error:  # any failure means "not ready", whatever its type
            raise ImError(ErrorCode.UNAVAILABLE, f"dependency down: {error}") from None
        return Health(status="ok")

    app.include_router(groups_router)
    app.include_router(friends_router)
    return app
