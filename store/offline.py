"""Offline lists in Redis: what a user has not acknowledged yet (seed steps 9-12).

Key (docs/architecture.md): ``offline:{user}:body``, a hash msg_id →
StoredMessage JSON. One field per listed message, written idempotently per
msg_id; the order (ts, then conversation, then seq) is the messages' own, sorted
at read time. A message stays listed until the client acks it (``remove``). The
list is capped at ``IM_OFFLINE_MAX_PER_USER`` (the oldest are dropped; the
client gets them back by syncing from MySQL) and expires ``IM_OFFLINE_TTL_S``
after its last write. See docs/operations.md, "Offline lists".

Until 2026-11-27 a zset ``offline:{user}`` (msg_id → ts) was kept beside the
hash, for the order and the cap. It cost a skiplist insert and removal per
delivery (with the hash, ~19 us of Redis time per group delivery); it is no
longer written or read and expires with its TTL.
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

# KEYS: one list per user. ARGV: cap, ttl_s, then (msg_id, body) pairs, each
# listed for every user in one HSET: a message's body is sent once however many
# recipients it has, and rewriting a listed msg_id changes nothing. Returns the
# positions (1-based) of the users now over the cap; add_many trims those.
_ADD = """
local cap = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local over = {}
for k = 1, #KEYS do
    redis.call('HSET', KEYS[k], unpack(ARGV, 3, #ARGV))
    if redis.call('HLEN', KEYS[k]) > cap then
        over[#over + 1] = k
    end
    redis.call('EXPIRE', KEYS[k], ttl)
end
return over
"""


# KEYS: one list per user. ARGV: each user's number of ids, then all the ids,
# user after user. All users of an ack flush in one call. Returns each user's
# count of ids that were listed.
_REMOVE = """
local removed = {}
local at = #KEYS + 1
for u = 1, #KEYS do
    local n = tonumber(ARGV[u])
    local count = 0
    if n > 0 then
        count = redis.call('HDEL', KEYS[u], unpack(ARGV, at, at + n - 1))
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
    """The user's offline list (named for the body hash it always was)."""
    return OFFLINE_PREFIX + user + BODY_SUFFIX


def retired_order_key(user: str) -> str:
    """The zset kept beside the list until 2026-11-27; no longer written or read."""
    return OFFLINE_PREFIX + user


def delivery_order(message: StoredMessage) -> tuple[int, str, int]:
    """Oldest first; within one conversation (ts never decreases there) by seq."""
    return (message.ts, message.conv_id, message.seq)


class OfflineStore:
    """Every Redis key of the offline lists, read and written in one place."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.cap = settings.offline_max_per_user
        self.ttl_s = settings.offline_ttl_s
        self._add = redis.register_script(_ADD)
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
        calls: list[list[str]] = []
        for msg_ids, users in users_of.items():
            messages = by_user[users[0]]
            for start in range(0, len(msg_ids), ADD_CHUNK):
                args: list[Any] = [self.cap, self.ttl_s]
                chunk = msg_ids[start : start + ADD_CHUNK]
                for msg_id in chunk:
                    args.extend((msg_id, encode(messages[msg_id])))
                users_per_call = max(1, min(USERS_PER_ADD, WRITES_PER_ADD // len(chunk)))
                for first in range(0, len(users), users_per_call):
                    part = users[first : first + users_per_call]
                    batch.call(self._add, [offline_key(user) for user in part], args)
                    calls.append(part)
        over_cap = {
            part[position - 1]
            for part, over in zip(calls, await batch.execute(), strict=True)
            for position in over
        }
        if over_cap:
            await self._trim(sorted(over_cap))

    async def _trim(self, users: Sequence[str]) -> None:
        """Drop the oldest messages of lists over the cap (rare: a user away for long)."""
        oldest = {
            user: messages[: len(messages) - self.cap]
            for user, messages in (await self.pending_many(users)).items()
            if len(messages) > self.cap
        }
        if not oldest:
            return
        # All users' drops in one round trip, as the reads were. An ack removing
        # one of these meanwhile only makes HDEL count fewer.
        async with self.redis.pipeline(transaction=False) as pipe:
            for user, messages in oldest.items():
                pipe.hdel(offline_key(user), *(m.msg_id for m in messages))
            dropped_total = sum(int(dropped) for dropped in await pipe.execute())
        if dropped_total:
            # The client finds these again by syncing the conversation from MySQL.
            log.warning(
                "offline lists over the cap of %d: dropped %d oldest", self.cap, dropped_total
            )

    async def pending(self, user: str, limit: int | None = None) -> list[StoredMessage]:
        """The user's listed messages, oldest first (ts, then conversation, then seq)."""
        messages = (await self.pending_many([user]))[user]
        return messages if limit is None else messages[: max(limit, 0)]

    async def pending_many(self, users: Sequence[str]) -> dict[str, list[StoredMessage]]:
        """Every listed message of each user, oldest first, in one round trip."""
        wanted_users = list(dict.fromkeys(users))
        if not wanted_users:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for user in wanted_users:
                pipe.hgetall(offline_key(user))
            replies = await pipe.execute()
        return {
            user: self._decoded(user, bodies)
            for user, bodies in zip(wanted_users, replies, strict=True)
        }

    @staticmethod
    def _decoded(user: str, bodies: dict[Any, Any]) -> list[StoredMessage]:
        """The listed bodies decoded, oldest first."""
        messages = []
        for msg_id, body in bodies.items():
            try:
                messages.append(decode_stored_message(body))
            except msgspec.DecodeError:
                log.error("offline list of %s holds an undecodable body for %r", user, msg_id)
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
            keys = [offline_key(user) for _, user, _ in part]
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
        return int(await self.redis.hlen(offline_key(user)))
