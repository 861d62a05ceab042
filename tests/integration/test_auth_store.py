"""Users in MySQL and token revocation in Redis, on the real stack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiomysql
import pytest
from redis.asyncio import Redis

from auth.passwords import hash_password, verify_password
from auth.tokens import TokenService
from config.settings import Settings
from schemas.errors import AuthError, ErrorCode, ImError, RateLimitedError
from store.login_attempts import IP_WINDOW_S, LoginAttempts, address_key, failures_key
from store.mysql import close_pool, create_pool
from store.register import RegisterStore
from store.users import UserStore


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[aiomysql.Pool]:
    pool = await create_pool(settings, maxsize=2)
    yield pool
    await close_pool(pool)


@pytest.fixture
async def register(settings: Settings) -> AsyncIterator[RegisterStore]:
    redis = Redis.from_url(settings.redis_url)
    yield RegisterStore(redis, settings)
    await redis.aclose()


async def test_created_user_exists_with_its_hash(
    pool: aiomysql.Pool, unique: Callable[[str], str]
) -> None:
    users = UserStore(pool)
    user = unique("alice")
    assert not await users.exists(user)
    assert await users.password_hash(user) is None

    await users.create(user, hash_password("alice's password"))

    assert await users.exists(user)
    stored = await users.password_hash(user)
    assert stored is not None
    assert verify_password(stored, "alice's password")


async def test_second_user_with_the_same_id_is_refused(
    pool: aiomysql.Pool, unique: Callable[[str], str]
) -> None:
    users = UserStore(pool)
    user = unique("bob")
    await users.create(user, hash_password("first password"))
    with pytest.raises(ImError) as raised:
        await users.create(user, hash_password("second password"))
    assert raised.value.code is ErrorCode.USER_EXISTS
    # The first registration still holds.
    assert verify_password(await users.password_hash(user), "first password")


async def test_ids_differing_only_in_case_are_one_user_but_do_not_log_in_as_each_other(
    pool: aiomysql.Pool, unique: Callable[[str], str]
) -> None:
    users = UserStore(pool)
    user = unique("carol")
    await users.create(user, hash_password("carol's password"))
    # "CAROL-..." must not borrow carol's row (routes and conversations use exact ids) ...
    assert not await users.exists(user.upper())
    assert await users.password_hash(user.upper()) is None
    # ... nor be registered as a look-alike of an existing user.
    with pytest.raises(ImError) as raised:
        await users.create(user.upper(), hash_password("impostor password"))
    assert raised.value.code is ErrorCode.USER_EXISTS


async def test_invalid_user_id_is_refused_before_touching_the_table(pool: aiomysql.Pool) -> None:
    users = UserStore(pool)
    for bad in ("", "has space", "p:a:b", "x" * 65):
        with pytest.raises(ImError) as raised:
            await users.create(bad, "hash")
        assert raised.value.code is ErrorCode.BAD_REQUEST
        assert not await users.exists(bad)


async def test_password_hash_can_be_replaced(
    pool: aiomysql.Pool, unique: Callable[[str], str]
) -> None:
    users = UserStore(pool)
    user = unique("dave")
    await users.create(user, hash_password("dave's password"))
    await users.set_password_hash(user, hash_password("dave's password"))
    assert verify_password(await users.password_hash(user), "dave's password")


async def test_revoked_token_is_refused_and_others_still_work(
    settings: Settings, register: RegisterStore, unique: Callable[[str], str]
) -> None:
    tokens = TokenService(settings, register)
    user = unique("erin")
    revoked, kept = tokens.issue(user), tokens.issue(user)

    await tokens.revoke(await tokens.verify(revoked.token))

    with pytest.raises(AuthError) as raised:
        await tokens.verify(revoked.token)
    assert raised.value.code is ErrorCode.TOKEN_REVOKED
    assert (await tokens.verify(kept.token)).user == user
    # The revocation lasts as long as the token would have, not forever.
    ttl = await register.redis.ttl(f"revoked:{revoked.jti}")
    assert 0 < ttl <= settings.token_ttl_s


def _limits(settings: Settings, failures: int, attempts: int) -> Settings:
    return settings.model_copy(
        update={"login_failures_per_user": failures, "login_attempts_per_ip_per_min": attempts}
    )


async def test_a_user_s_failed_logins_lock_password_logins_until_a_success_or_the_window(
    redis: Redis, settings: Settings, unique: Callable[[str], str]
) -> None:
    attempts = LoginAttempts(redis, _limits(settings, failures=3, attempts=0))
    user, other, address = unique("mallory-target"), unique("bystander"), unique("10.0.0")
    for _ in range(3):
        await attempts.admit(user, address)
        await attempts.failed(user)
    with pytest.raises(RateLimitedError) as refused:
        await attempts.admit(user, address)
    assert refused.value.code == ErrorCode.RATE_LIMITED
    assert 1 <= refused.value.retry_after_s <= settings.login_failure_window_s
    await attempts.admit(other, address)  # other users are not locked

    # Below the limit, a success forgives the failures.
    await redis.delete(failures_key(user))
    for _ in range(2):
        await attempts.failed(user)
    await attempts.succeeded(user)
    for _ in range(2):
        await attempts.failed(user)
    await attempts.admit(user, address)


async def test_one_address_gets_a_bounded_number_of_attempts_a_minute(
    redis: Redis, settings: Settings, unique: Callable[[str], str]
) -> None:
    attempts = LoginAttempts(redis, _limits(settings, failures=0, attempts=4))
    address, elsewhere = unique("192.0.2"), unique("198.51.100")
    for n in range(4):
        await attempts.admit(unique(f"user{n}"), address)
    with pytest.raises(RateLimitedError) as refused:
        await attempts.admit(unique("user"), address)
    assert 1 <= refused.value.retry_after_s <= IP_WINDOW_S
    assert 0 < await redis.ttl(address_key(address)) <= IP_WINDOW_S
    await attempts.admit(unique("user"), elsewhere)


async def test_limits_at_zero_count_nothing(
    redis: Redis, settings: Settings, unique: Callable[[str], str]
) -> None:
    attempts = LoginAttempts(redis, _limits(settings, failures=0, attempts=0))
    user, address = unique("user"), unique("203.0.113")
    for _ in range(20):
        await attempts.admit(user, address)
        await attempts.failed(user)
    assert await redis.exists(failures_key(user), address_key(address)) == 0
