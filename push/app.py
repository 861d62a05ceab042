"""The push service: an internal HTTP API for messages that come from outside the chat.

Other back-end services (not end users) call it with a service key
(``X-Service-Key``, one of ``IM_PUSH_SERVICE_KEYS``) to push a system message
to users, to a group, or to everyone online. Each request answers a push id as
soon as Kafka holds the message; from there it takes the same path as chat
messages, so offline users get it at their next login.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, status
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from config.settings import Settings
from connector.rate_limit import TokenBucket
from push.publisher import SystemPublisher, new_push_id
from schemas.conversations import ID_PATTERN
from schemas.errors import ErrorCode, ImError
from schemas.http import error_responses, install_error_handlers
from store.backend_errors import BACKEND_ERRORS
from store.groups import GroupStore
from store.mysql import close_pool, create_pool

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 8000
MAX_USERS_PER_REQUEST = 1000


class UsersPush(BaseModel):
    """A system message to each of these users (in their own system conversation)."""

    user_ids: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(
        min_length=1, max_length=MAX_USERS_PER_REQUEST
    )
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    data: dict[str, Any] | None = Field(None, description="structured payload for the client")


class GroupPush(BaseModel):
    """A system message into a group's conversation (every member, in group order)."""

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    data: dict[str, Any] | None = None


class BroadcastPush(BaseModel):
    """A system message to everyone online now."""

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    data: dict[str, Any] | None = None


class PushAccepted(BaseModel):
    push_id: str = Field(description="id of this push; client_msg_id of the messages it made")
    recipients: int | None = Field(None, description="users addressed (users push only)")


class Health(BaseModel):
    status: str


class KeyLimits:
    """A token bucket per service key: ``IM_PUSH_RATE_PER_S`` requests a second each."""

    def __init__(self, settings: Settings) -> None:
        self.rate = settings.push_rate_per_s
        self.buckets: dict[str, TokenBucket] = {}

    def allow(self, key: str) -> bool:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(self.rate, max(1, int(self.rate)))
        return bucket.allow()


async def service_key(
    request: Request,
    x_service_key: Annotated[
        str | None,
        Header(alias="X-Service-Key", description="one of the keys in IM_PUSH_SERVICE_KEYS"),
    ] = None,
) -> str:
    """Authenticate the calling service and spend one token of its rate limit."""
    presented = x_service_key or ""
    keys: frozenset[str] = request.app.state.service_keys
    if not any(hmac.compare_digest(presented, key) for key in keys):
        raise ImError(ErrorCode.BAD_TOKEN, "missing or unknown X-Service-Key")
    if not request.app.state.limits.allow(presented):
        raise ImError(ErrorCode.RATE_LIMITED, "push rate limit of this service key exceeded")
    return presented


Authorized = Annotated[str, Depends(service_key)]


def create_app(settings: Settings) -> FastAPI:
    """The push app; its Kafka producer, Redis and MySQL open in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        publisher = SystemPublisher(settings)
        await publisher.start()
        redis = Redis.from_url(settings.redis_url)
        pool = await create_pool(settings)
        app.state.publisher = publisher
        app.state.groups = GroupStore(pool, redis)
        app.state.redis = redis
        app.state.pool = pool
        try:
            yield
        finally:
            await publisher.stop()
            await close_pool(pool)
            await redis.aclose()

    app = FastAPI(
        title="MM-IM push service",
        version="1.0.0",
        summary="Internal API: system messages to users, groups, or everyone online.",
        lifespan=lifespan,
    )
    app.state.service_keys = settings.service_keys
    app.state.limits = KeyLimits(settings)
    # A refused caller may try again once its bucket holds a token again.
    install_error_handlers(
        app,
        retry_after_s=max(1, math.ceil(1 / settings.push_rate_per_s)),
        unavailable=BACKEND_ERRORS,
    )

    auth_errors = (ErrorCode.BAD_REQUEST, ErrorCode.BAD_TOKEN, ErrorCode.RATE_LIMITED)

    @app.post(
        "/v1/push/users",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=PushAccepted,
        responses=error_responses(*auth_errors, ErrorCode.UNAVAILABLE),
        summary="Push a system message to users",
    )
    async def push_to_users(body: UsersPush, request: Request, _key: Authorized) -> PushAccepted:
        push_id = new_push_id()
        await request.app.state.publisher.to_users(push_id, body.user_ids, body.text, body.data)
        log.info("push %s to %d users", push_id, len(body.user_ids))
        return PushAccepted(push_id=push_id, recipients=len(set(body.user_ids)))

    @app.post(
        "/v1/push/groups/{group_id}",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=PushAccepted,
        responses=error_responses(*auth_errors, ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE),
        summary="Push a system message into a group",
    )
    async def push_to_group(
        group_id: str, body: GroupPush, request: Request, _key: Authorized
    ) -> PushAccepted:
        await request.app.state.groups.require(group_id)
        push_id = new_push_id()
        await request.app.state.publisher.to_group(push_id, group_id, body.text, body.data)
        log.info("push %s to group %s", push_id, group_id)
        return PushAccepted(push_id=push_id)

    @app.post(
        "/v1/push/broadcast",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=PushAccepted,
        responses=error_responses(*auth_errors, ErrorCode.UNAVAILABLE),
        summary="Push a system message to everyone online",
    )
    async def broadcast(body: BroadcastPush, request: Request, _key: Authorized) -> PushAccepted:
        push_id = new_push_id()
        await request.app.state.publisher.broadcast(push_id, body.text, body.data)
        log.info("broadcast %s", push_id)
        return PushAccepted(push_id=push_id)

    @app.get(
        "/healthz",
        response_model=Health,
        responses=error_responses(ErrorCode.UNAVAILABLE),
        summary="Ready: Kafka producer, Redis and MySQL answer",
    )
    async def healthz(request: Request) -> Health:
        if not request.app.state.publisher.started:
            raise ImError(ErrorCode.UNAVAILABLE, "Kafka producer not started")
        try:
            await request.app.state.redis.ping()
            async with request.app.state.pool.acquire() as conn:
                await conn.ping(reconnect=False)
        except Exception as error:  # any failure means "not ready"
            raise ImError(ErrorCode.UNAVAILABLE, f"dependency down: {error}") from None
        return Health(status="ok")

    return app
