"""Offline lists in Redis: what a user has not acknowledged yet (seed steps 9-12).

Keys (docs/architecture.md):

- ``offline:{user}`` zset msg_id → score = the message's server ts (ms);
- ``offline:{user}:body`` hash msg_id → StoredMessage JSON.

Both keys are written together by one Lua script, so a listed id always has its
body. A message stays listed until the client acks it (``remove``). The list is
capped at ``IM_OFFLINE_MAX_PER_USER`` (the oldest are dropped; the client gets
them back by syncing from MySQL) and expires ``IM_OFFLINE_TTL_S`` after its last
write. See docs/operations.md, "Offline lists".
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from config.settings import Settings
from schemas.records import StoredMessage, decode_stored_message, encode

log = logging.getLogger(__name__)

OFFLINE_PREFIX = "offline:"
BODY_SUFFIX = ":body"
# One script call per user carries at most this many messages.
ADD_CHUNK = 500

# KEYS: zset, body hash. ARGV: cap, ttl_s, then (msg_id, score, body) triples.
# ZADD NX keeps the first score of a message written twice (idempotent per msg_id).
# Returns how many of the oldest entries were dropped to respect the cap.
_ADD_AND_TRIM = """
local cap = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
    redis.call('ZADD', KEYS[1], 'NX', ARGV[i + 1], ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
end
local excess = redis.call('ZCARD', KEYS[1]) - cap
if excess > 0 then
    local dropped = redis.call('ZRANGE', KEYS[1], 0, excess - 1)
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
    for start = 1, #dropped, 1000 do
        redis.call('HDEL', KEYS[2], unpack(dropped, start, math.min(start + 999, #dropped)))
    end
else
    excess = 0
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return excess
"""


# KEYS: zset, body hash. ARGV: msg_ids. Both keys in one step, like MULTI/EXEC did,
# but callable many times in one non-transactional pipeline (one round trip).
_REMOVE = """
local removed = redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[2], unpack(ARGV))
return removed
"""
# unpack() is bounded by Lua's stack: larger acks are split.
REMOVE_CHUNK = 1000


def offline_key(user: str) -> str:
    return OFFLINE_PREFIX + user


def body_key(user: str) -> str:
    return OFFLINE_PREFIX + user + BODY_SUFFIX


def delivery_order(message: StoredMessage) -> tuple[int, str, int]:
    """Oldest first; within one conversation (ts never decreases there) by seq."""
    return (message.ts, message.conv_id, message.seq)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


class OfflineStore:
    """Every Redis key of the offline lists, read and written in one place."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.cap = settings.offline_max_per_user
        self.ttl_s = settings.offline_ttl_s
        self._add_and_trim = redis.register_script(_ADD_AND_TRIM)
        self._remove = redis.register_script(_REMOVE)

    async def add_many(self, items: Sequence[tuple[str, StoredMessage]]) -> None:
        """List each message for its user (idempotent per msg_id), cap and TTL applied."""
        by_user: dict[str, dict[str, StoredMessage]] = defaultdict(dict)
        for user, message in items:
            by_user[user][message.msg_id] = message
        if not by_user:
            return
        dropped_total = 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for user, messages in by_user.items():
                listed = list(messages.values())
                for start in range(0, len(listed), ADD_CHUNK):
                    args: list[Any] = [self.cap, self.ttl_s]
                    for message in listed[start : start + ADD_CHUNK]:
                        args.extend((message.msg_id, message.ts, encode(message)))
                    await self._add_and_trim(
                        keys=[offline_key(user), body_key(user)], args=args, client=pipe
                    )
            results = await pipe.execute()
        dropped_total = sum(int(dropped or 0) for dropped in results)
        if dropped_total:
            # The client finds these again by syncing the conversation from MySQL.
            log.warning(
                "offline lists over the cap of %d: dropped %d oldest", self.cap, dropped_total
            )

    async def pending(self, user: str, limit: int | None = None) -> list[StoredMessage]:
        """The user's listed messages, oldest first (ts, then conversation, then seq)."""
        zkey, hkey = offline_key(user), body_key(user)
        if limit is None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrange(zkey, 0, -1)
                pipe.hgetall(hkey)
                ids, bodies = await pipe.execute()
            wanted = [_text(i) for i in ids]
            by_id = {_text(k): v for k, v in bodies.items()}
            raw = [by_id.get(msg_id) for msg_id in wanted]
        else:
            if limit <= 0:
                return []
            head: list[Any] = await self.redis.zrange(zkey, 0, limit - 1, withscores=True)
            if not head:
                return []
            wanted = [_text(member) for member, _ in head]
            # Entries sharing the boundary score may sort differently by
            # (conv_id, seq) than by member name: fetch them all, sort, then cut.
            boundary = head[-1][1]
            ties = await self.redis.zrangebyscore(zkey, boundary, boundary)
            wanted = list(dict.fromkeys([*wanted, *(_text(t) for t in ties)]))
            raw = await self.redis.hmget(hkey, wanted)
        messages = []
        for msg_id, body in zip(wanted, raw, strict=True):
            if body is None:
                continue  # removed between the two reads
            try:
                messages.append(decode_stored_message(body))
            except msgspec.DecodeError:
                log.error("offline list of %s holds an undecodable body for %s", user, msg_id)
        messages.sort(key=delivery_order)
        return messages if limit is None else messages[:limit]

    async def remove(self, user: str, msg_ids: Sequence[str]) -> int:
        """Drop acknowledged messages; returns how many were listed."""
        return (await self.remove_many([(user, msg_ids)]))[0]

    async def remove_many(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[int]:
        """Drop acknowledged messages of several users in one round trip.

        Returns, per item, how many of its ids were listed.
        """
        chunks: list[tuple[int, list[str], list[str]]] = []
        for index, (user, msg_ids) in enumerate(items):
            ids = list(dict.fromkeys(msg_ids))
            for start in range(0, len(ids), REMOVE_CHUNK):
                chunks.append(
                    (index, [offline_key(user), body_key(user)], ids[start : start + REMOVE_CHUNK])
                )
        counts = [0] * len(items)
        if not chunks:
            return counts
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, keys, ids in chunks:
                await self._remove(keys=keys, args=ids, client=pipe)
            results = await pipe.execute()
        for (index, _, _), removed in zip(chunks, results, strict=True):
            counts[index] += int(removed)
        return counts

    async def count(self, user: str) -> int:
        """How many messages wait for ``user``."""
        return int(await self.redis.zcard(offline_key(user)))
