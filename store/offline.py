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
from store.pipelined_scripts import ScriptPipeline

log = logging.getLogger(__name__)

OFFLINE_PREFIX = "offline:"
BODY_SUFFIX = ":body"
# One script call carries at most this many messages, and lists them for at
# most this many users (a group message goes to every member's list at once),
# and at most WRITES_PER_ADD (user, message) pairs: a script holds Redis for
# its whole run, other clients' commands go between the calls.
ADD_CHUNK = 500
USERS_PER_ADD = 250
WRITES_PER_ADD = 5_000

# KEYS: (zset, body hash) pairs, one pair per user. ARGV: cap, ttl_s, then
# (msg_id, score, body) triples, each listed for every user: a message's body is
# sent once however many recipients it has. ZADD NX keeps the first score of a
# message written twice (idempotent per msg_id). Returns how many of the oldest
# entries were dropped, over all users, to respect the cap.
_ADD_AND_TRIM = """
local cap = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local dropped_total = 0
for k = 1, #KEYS, 2 do
    local zset, bodies = KEYS[k], KEYS[k + 1]
    for i = 3, #ARGV, 3 do
        redis.call('ZADD', zset, 'NX', ARGV[i + 1], ARGV[i])
        redis.call('HSET', bodies, ARGV[i], ARGV[i + 2])
    end
    local excess = redis.call('ZCARD', zset) - cap
    if excess > 0 then
        local dropped = redis.call('ZRANGE', zset, 0, excess - 1)
        redis.call('ZREMRANGEBYRANK', zset, 0, excess - 1)
        for start = 1, #dropped, 1000 do
            redis.call('HDEL', bodies, unpack(dropped, start, math.min(start + 999, #dropped)))
        end
        dropped_total = dropped_total + excess
    end
    redis.call('EXPIRE', zset, ttl)
    redis.call('EXPIRE', bodies, ttl)
end
return dropped_total
"""


# KEYS: (zset, body hash) pairs, one pair per user. ARGV: each user's number of
# ids, then all the ids, user after user. Both keys of a user in one step, like
# MULTI/EXEC did; all users of an ack flush in one call. Returns each user's
# count of ids that were listed.
_REMOVE = """
local users = #KEYS / 2
local removed = {}
local at = users + 1
for u = 1, users do
    local n = tonumber(ARGV[u])
    local count = 0
    if n > 0 then
        count = redis.call('ZREM', KEYS[2 * u - 1], unpack(ARGV, at, at + n - 1))
        redis.call('HDEL', KEYS[2 * u], unpack(ARGV, at, at + n - 1))
    end
    removed[u] = count
    at = at + n
end
return removed
"""
# unpack() is bounded by Lua's stack: a user's larger acks are split.
REMOVE_CHUNK = 1000
USERS_PER_REMOVE = 500


def offline_key(user: str) -> str:
    return OFFLINE_PREFIX + user


def body_key(user: str) -> str:
    return OFFLINE_PREFIX + user + BODY_SUFFIX


def list_keys(users: Sequence[str]) -> list[str]:
    """The (zset, body hash) key pair of each user, flat: the scripts' KEYS."""
    return [key for user in users for key in (offline_key(user), body_key(user))]


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
        """List each message for its user (idempotent per msg_id), cap and TTL applied.

        Users given the same messages (a group's members) share script calls.
        """
        by_user: dict[str, dict[str, StoredMessage]] = defaultdict(dict)
        for user, message in items:
            by_user[user][message.msg_id] = message
        if not by_user:
            return
        users_of: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for user, messages in by_user.items():
            users_of[tuple(messages)].append(user)
        batch = ScriptPipeline(self.redis)
        for msg_ids, users in users_of.items():
            messages = by_user[users[0]]
            for start in range(0, len(msg_ids), ADD_CHUNK):
                args: list[Any] = [self.cap, self.ttl_s]
                chunk = msg_ids[start : start + ADD_CHUNK]
                for msg_id in chunk:
                    message = messages[msg_id]
                    args.extend((msg_id, message.ts, encode(message)))
                users_per_call = max(1, min(USERS_PER_ADD, WRITES_PER_ADD // len(chunk)))
                for first in range(0, len(users), users_per_call):
                    batch.call(
                        self._add_and_trim, list_keys(users[first : first + users_per_call]), args
                    )
        results = await batch.execute()
        dropped_total = sum(int(dropped or 0) for dropped in results)
        if dropped_total:
            # The client finds these again by syncing the conversation from MySQL.
            log.warning(
                "offline lists over the cap of %d: dropped %d oldest", self.cap, dropped_total
            )

    async def pending(self, user: str, limit: int | None = None) -> list[StoredMessage]:
        """The user's listed messages, oldest first (ts, then conversation, then seq)."""
        if limit is None:
            return (await self.pending_many([user]))[user]
        if limit <= 0:
            return []
        zkey, hkey = offline_key(user), body_key(user)
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
        return self._decoded(user, wanted, raw)[:limit]

    async def pending_many(self, users: Sequence[str]) -> dict[str, list[StoredMessage]]:
        """Every listed message of each user, oldest first, in one round trip."""
        wanted_users = list(dict.fromkeys(users))
        if not wanted_users:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for user in wanted_users:
                pipe.zrange(offline_key(user), 0, -1)
                pipe.hgetall(body_key(user))
            replies = await pipe.execute()
        found: dict[str, list[StoredMessage]] = {}
        for position, user in enumerate(wanted_users):
            ids, bodies = replies[2 * position], replies[2 * position + 1]
            wanted = [_text(i) for i in ids]
            by_id = {_text(k): v for k, v in bodies.items()}
            found[user] = self._decoded(user, wanted, [by_id.get(i) for i in wanted])
        return found

    @staticmethod
    def _decoded(user: str, msg_ids: list[str], bodies: list[Any]) -> list[StoredMessage]:
        """The listed bodies decoded, oldest first; ids removed meanwhile are skipped."""
        messages = []
        for msg_id, body in zip(msg_ids, bodies, strict=True):
            if body is None:
                continue  # removed between the two reads
            try:
                messages.append(decode_stored_message(body))
            except msgspec.DecodeError:
                log.error("offline list of %s holds an undecodable body for %s", user, msg_id)
        messages.sort(key=delivery_order)
        return messages

    async def remove(self, user: str, msg_ids: Sequence[str]) -> int:
        """Drop acknowledged messages; returns how many were listed."""
        return (await self.remove_many([(user, msg_ids)]))[0]

    async def remove_many(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[int]:
        """Drop acknowledged messages of several users in one round trip.

        Returns, per item, how many of its ids were listed.
        """
        entries: list[tuple[int, str, list[str]]] = []
        for index, (user, msg_ids) in enumerate(items):
            ids = list(dict.fromkeys(msg_ids))
            for start in range(0, len(ids), REMOVE_CHUNK):
                entries.append((index, user, ids[start : start + REMOVE_CHUNK]))
        counts = [0] * len(items)
        if not entries:
            return counts
        batch = ScriptPipeline(self.redis)
        calls = []
        for first in range(0, len(entries), USERS_PER_REMOVE):
            part = entries[first : first + USERS_PER_REMOVE]
            keys = list_keys([user for _, user, _ in part])
            args: list[Any] = [len(ids) for _, _, ids in part]
            args.extend(msg_id for _, _, ids in part for msg_id in ids)
            batch.call(self._remove, keys, args)
            calls.append(part)
        for part, removed in zip(calls, await batch.execute(), strict=True):
            for (index, _, _), count in zip(part, removed, strict=True):
                counts[index] += int(count)
        return counts

    async def count(self, user: str) -> int:
        """How many messages wait for ``user``."""
        return int(await self.redis.zcard(offline_key(user)))
