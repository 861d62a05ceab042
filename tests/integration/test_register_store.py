"""The register store against the real Redis of the test stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from schemas.errors import AuthError, ErrorCode
from store.register import ConnectorInfo, RegisterStore, SessionRoute


@pytest.fixture
async def register(settings: Settings) -> AsyncIterator[RegisterStore]:
    redis = Redis.from_url(settings.redis_url)
    try:
        yield RegisterStore(redis, settings)
    finally:
        await redis.aclose()


async def test_bind_returns_the_replaced_route_of_the_same_device(
    register: RegisterStore, unique: Callable[[str], str]
) -> None:
    user = unique("alice")
    assert await register.bind_session(user, "phone", "c1", "s1") is None
    previous = await register.bind_session(user, "phone", "c2", "s2")
    assert previous == SessionRoute(user, "phone", "c1", "s1")
    await register.bind_session(user, "laptop", "c1", "s3")
    assert await register.routes(user) == [
        SessionRoute(user, "laptop", "c1", "s3"),
        SessionRoute(user, "phone", "c2", "s2"),
    ]
    ttl = await register.redis.ttl(f"route:{user}")
    assert 0 < ttl <= register.route_ttl_s


async def test_a_login_with_a_revoked_token_binds_nothing(
    register: RegisterStore, unique: Callable[[str], str]
) -> None:
    user, good, revoked = unique("erin"), unique("jti"), unique("jti")
    await register.bind_session(user, "phone", "c1", "s1", unless_revoked=good)
    await register.revoke_token(revoked, 30)

    with pytest.raises(AuthError) as refused:
        await register.bind_session(user, "phone", "c2", "s2", unless_revoked=revoked)

    assert refused.value.code == ErrorCode.TOKEN_REVOKED
    # The earlier session keeps its route: the refused login changed nothing.
    assert await register.routes(user) == [SessionRoute(user, "phone", "c1", "s1")]


async def test_a_stale_disconnect_keeps_the_newer_sessions_route(
    register: RegisterStore, unique: Callable[[str], str]
) -> None:
    user = unique("bob")
    await register.bind_session(user, "phone", "c1", "old-session")
    await register.bind_session(user, "phone", "c2", "new-session")

    assert await register.unbind_session(user, "phone", "old-session") is False
    assert await register.routes(user) == [SessionRoute(user, "phone", "c2", "new-session")]

    assert await register.unbind_session(user, "phone", "new-session") is True
    assert await register.routes(user) == []


async def test_routes_many_and_touch(register: RegisterStore, unique: Callable[[str], str]) -> None:
    online, offline = unique("carol"), unique("dave")
    await register.bind_session(online, "d", "c9", "s9")
    await register.redis.expire(f"route:{online}", 5)
    await register.touch_routes([online, offline])
    assert await register.redis.ttl(f"route:{online}") > 5
    found = await register.routes_many([online, offline, online])
    assert found == {online: [SessionRoute(online, "d", "c9", "s9")], offline: []}


async def test_connectors_announce_expire_and_withdraw(
    register: RegisterStore, unique: Callable[[str], str]
) -> None:
    short, stays, gone = unique("cx"), unique("cy"), unique("cz")
    for cid, ttl in ((short, 0.3), (stays, 30), (gone, 30)):
        info = ConnectorInfo(cid, "127.0.0.1", 7001, connections=3, capacity=100, ts_ms=1)
        await register.announce_connector(info, ttl)
    await register.withdraw_connector(gone)
    await asyncio.sleep(0.5)

    live = {info.connector_id: info for info in await register.live_connectors()}
    assert stays in live and short not in live and gone not in live
    assert live[stays] == ConnectorInfo(stays, "127.0.0.1", 7001, 3, 100, 1)
    assert await register.alive_connectors([short, stays, gone]) == {stays}
    # The expired connector was dropped from the index as well.
    assert not await register.redis.sismember("connectors", short)
    await register.withdraw_connector(stays)


async def test_revoked_tokens(register: RegisterStore, unique: Callable[[str], str]) -> None:
    jti = unique("jti")
    assert await register.is_revoked(jti) is False
    await register.revoke_token(jti, 30)
    assert await register.is_revoked(jti) is True
    assert 0 < await register.redis.ttl(f"revoked:{jti}") <= 30
