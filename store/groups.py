"""Groups and their members: MySQL is the record, Redis caches each group's member set.

Every SQL statement and Redis key about groups is here. The cache
(``group:{group_id}:members``) is filled on a miss and deleted on every change,
so the logic's fan-out reads one Redis set per group message.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aiomysql
import pymysql
import redis.asyncio as aioredis

from schemas.errors import ErrorCode, ImError

Role = Literal["admin", "member"]
_DUPLICATE_KEY = 1062
_NO_REFERENCED_ROW = 1452
# A cached member set lives at most this long even if an invalidation were lost.
MEMBERS_CACHE_TTL_S = 3600


@dataclass(frozen=True)
class Group:
    group_id: str
    name: str
    owner: str


@dataclass(frozen=True)
class Member:
    user_id: str
    role: Role


def members_key(group_id: str) -> str:
    return f"group:{group_id}:members"


def generation_key(group_id: str) -> str:
    return f"group:{group_id}:gen"


# Fill the cache only if no change happened since the reader looked at MySQL:
# otherwise a slow reader could cache a member set that a change just replaced.
_FILL_IF_UNCHANGED = """
local current = redis.call('GET', KEYS[2]) or '0'
if current ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
-- In slices: Lua's unpack() cannot spread a very large group's members at once.
for i = 3, #ARGV, 1000 do
  redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def new_group_id() -> str:
    """Server-chosen group ids: short, unguessable, valid in conversation ids."""
    return f"g{secrets.token_hex(8)}"


class GroupStore:
    """Groups, membership and roles."""

    def __init__(self, pool: aiomysql.Pool, redis: aioredis.Redis) -> None:
        self.pool = pool
        self.redis = redis

    async def create(self, name: str, owner: str) -> Group:
        """A new group whose owner is its first admin."""
        group = Group(new_group_id(), name, owner)
        async with self.pool.acquire() as conn:
            await conn.begin()
            try:
                async with conn.cursor() as cur:
                    await cur.execute(
                        "INSERT INTO chat_groups (group_id, name, owner) VALUES (%s, %s, %s)",
                        (group.group_id, name, owner),
                    )
                    await cur.execute(
                        "INSERT INTO group_members (group_id, user_id, role)"
                        " VALUES (%s, %s, 'admin')",
                        (group.group_id, owner),
                    )
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
        return group

    async def get(self, group_id: str) -> Group | None:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT group_id, name, owner FROM chat_groups WHERE group_id = %s", (group_id,)
            )
            row = await cur.fetchone()
        return Group(*row) if row else None

    async def require(self, group_id: str) -> Group:
        group = await self.get(group_id)
        if group is None:
            raise ImError(ErrorCode.NOT_FOUND, f"group {group_id!r} does not exist")
        return group

    async def add_members(
        self, group_id: str, user_ids: Sequence[str], role: Role = "member"
    ) -> int:
        """Add users (already members are left as they are); returns how many were added."""
        if not user_ids:
            return 0
        try:
            async with self.pool.acquire() as conn, conn.cursor() as cur:
                added = await cur.executemany(
                    "INSERT IGNORE INTO group_members (group_id, user_id, role)"
                    " VALUES (%s, %s, %s)",
                    [(group_id, user_id, role) for user_id in user_ids],
                )
        except pymysql.err.IntegrityError as error:
            if error.args and error.args[0] == _NO_REFERENCED_ROW:
                raise ImError(ErrorCode.NOT_FOUND, f"group {group_id!r} does not exist") from None
            raise
        await self.invalidate(group_id)
        return int(added or 0)

    async def remove_member(self, group_id: str, user_id: str) -> bool:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            removed = await cur.execute(
                "DELETE FROM group_members WHERE group_id = %s AND user_id = %s",
                (group_id, user_id),
            )
        await self.invalidate(group_id)
        return bool(removed)

    async def members(self, group_id: str) -> list[Member]:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT user_id, role FROM group_members WHERE group_id = %s ORDER BY user_id",
                (group_id,),
            )
            rows = await cur.fetchall()
        return [Member(user_id, role) for user_id, role in rows]

    async def role_of(self, group_id: str, user_id: str) -> Role | None:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT role FROM group_members WHERE group_id = %s AND user_id = %s",
                (group_id, user_id),
            )
            row = await cur.fetchone()
        return row[0] if row else None

    async def groups_of(self, user_id: str) -> list[str]:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT group_id FROM group_members WHERE user_id = %s ORDER BY group_id",
                (user_id,),
            )
            rows = await cur.fetchall()
        return [row[0] for row in rows]

    async def memberships(self, user_id: str) -> list[tuple[Group, Role]]:
        """The groups ``user_id`` belongs to, with their role in each."""
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT g.group_id, g.name, g.owner, m.role FROM group_members m"
                " JOIN chat_groups g ON g.group_id = m.group_id"
                " WHERE m.user_id = %s ORDER BY g.group_id",
                (user_id,),
            )
            rows = await cur.fetchall()
        return [(Group(group_id, name, owner), role) for group_id, name, owner, role in rows]

    async def is_member(self, group_id: str, user_id: str) -> bool:
        """Membership from the Redis cache: one SISMEMBER, not the whole set, per check."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(members_key(group_id))
            pipe.sismember(members_key(group_id), user_id)
            cached, member = await pipe.execute()
        if cached:
            return bool(member)
        return user_id in await self.member_ids(group_id)

    async def member_ids(self, group_id: str) -> frozenset[str]:
        """The member set, from the Redis cache (filled from MySQL on a miss)."""
        key = members_key(group_id)
        cached = await self.redis.smembers(key)
        if cached:
            return frozenset(_text(member) for member in cached)
        generation = _text((await self.redis.get(generation_key(group_id))) or b"0")
        ids = frozenset(member.user_id for member in await self.members(group_id))
        if ids:
            await self.redis.eval(
                _FILL_IF_UNCHANGED,
                2,
                key,
                generation_key(group_id),
                generation,
                MEMBERS_CACHE_TTL_S,
                *sorted(ids),
            )
        return ids

    async def invalidate(self, group_id: str) -> None:
        """Drop the cached member set and move the generation on (see ``_FILL_IF_UNCHANGED``)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(generation_key(group_id))
            pipe.delete(members_key(group_id))
            await pipe.execute()
