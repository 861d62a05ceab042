"""Lua scripts in pipelines against the real Redis: one round trip, and a lost cache survived."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from config.settings import Settings
from schemas.errors import AuthError, ErrorCode
from store.pipelined_scripts import ScriptPipeline
from store.register import BindRequest, RegisterStore

_COUNT_UP = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_script_calls_and_plain_commands_reply_in_order(
    redis: Redis, unique: Callable[[str], str]
) -> None:
    key = unique("counter")
    count_up = redis.register_script(_COUNT_UP)
    await redis.script_load(_COUNT_UP)  # cached: everything goes in one round trip
    batch = ScriptPipeline(redis)
    batch.call(count_up, [key], [2])
    batch.pipe.get(key)
    batch.call(count_up, [key], [3])
    assert await batch.execute() == [2, b"2", 5]


async def test_after_the_script_cache_is_flushed_each_call_still_runs_exactly_once(
    redis: Redis, unique: Callable[[str], str]
) -> None:
    key = unique("counter")
    count_up = redis.register_script(_COUNT_UP)
    await redis.script_flush()
    batch = ScriptPipeline(redis)
    batch.call(count_up, [key], [1])
    batch.pipe.incrby(key, 100)  # not a script: it ran the first time and must not again
    batch.call(count_up, [key], [10])
    replies = await batch.execute()
    assert replies[1] == 100  # the plain command ran before the retried script calls
    assert sorted(replies[::2]) == [101, 111]
    assert int(await redis.get(key)) == 111


async def test_one_failed_command_is_that_caller_s_alone(
    redis: Redis, unique: Callable[[str], str]
) -> None:
    key = unique("text")
    await redis.set(key, "not a number")
    count_up = redis.register_script(_COUNT_UP)
    batch = ScriptPipeline(redis)
    batch.call(count_up, [key], [1])
    batch.call(count_up, [unique("counter")], [1])
    failed, counted = await batch.execute(raise_on_error=False)
    assert isinstance(failed, Exception) and "not an integer" in str(failed)
    assert counted == 1


async def test_many_logins_bind_in_one_call_and_only_the_revoked_one_is_refused(
    redis: Redis, settings: Settings, unique: Callable[[str], str]
) -> None:
    register = RegisterStore(redis, settings)
    alice, bob = unique("alice"), unique("bob")
    await register.bind_session(alice, "phone", "c1", "old")
    await register.revoke_token("bobs-jti", ttl_s=60)
    outcomes = await register.bind_many(
        [
            BindRequest(alice, "phone", "c2", "new", unless_revoked="alices-jti"),
            BindRequest(bob, "phone", "c2", "refused", unless_revoked="bobs-jti"),
            BindRequest(bob, "laptop", "c2", "fresh"),
        ]
    )
    replaced, refused, fresh = outcomes
    assert replaced is not None and replaced.session_id == "old"
    assert isinstance(refused, AuthError) and refused.code == ErrorCode.TOKEN_REVOKED
    assert fresh is None
    assert [r.session_id for r in await register.routes(alice)] == ["new"]
    assert [(r.device, r.session_id) for r in await register.routes(bob)] == [("laptop", "fresh")]
