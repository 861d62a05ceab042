"""The recent-message index in Redis: the last messages of each conversation (seed step 14).

Key ``recent:{conv_id}``: zset score = seq, member = StoredMessage JSON, trimmed
to the newest ``IM_RECENT_PER_CONV``. It is a cache in front of MySQL: a read
answers only when the index holds the requested range without holes, and the
caller goes to MySQL otherwise (see store/history.py).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis

from config.settings import Settings
from schemas.records import StoredMessage, decode_stored_message, encode
from store.pipelined_scripts import ScriptPipeline

log = logging.getLogger(__name__)

RECENT_PREFIX = "recent:"
# A conversation nobody wrote to for this long is served from MySQL alone.
RECENT_TTL_S = 30 * 24 * 3600


# One script call indexes a whole batch: four commands per conversation cost
# redis-py more to pack and parse than Redis to run. KEYS: conversation keys.
# ARGV: keep, ttl_s, then per key its count n and n (seq, member) pairs, oldest
# first. Whatever holds the batch's seq range is replaced, so a re-write never
# adds a twin: a conversation's messages reach the persister in seq order, so a
# batch holds a run of them (a seq between two written ones is rewritten too or,
# at worst, leaves a hole that sends readers to MySQL).
_INDEX = """
local keep = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local at = 3
for _, key in ipairs(KEYS) do
    local n = tonumber(ARGV[at])
    local first, last = ARGV[at + 1], ARGV[at + 2 * n - 1]
    redis.call('ZREMRANGEBYSCORE', key, first, last)
    for i = at + 1, at + 2 * n - 1, 2 do
        redis.call('ZADD', key, ARGV[i], ARGV[i + 1])
    end
    redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
    redis.call('EXPIRE', key, ttl)
    at = at + 2 * n + 1
end
return #KEYS
"""
# Conversations per script call (Redis runs other clients between calls).
CONVERSATIONS_PER_CALL = 200


def recent_key(conv_id: str) -> str:
    return RECENT_PREFIX + conv_id


class RecentIndex:
    """Every Redis key of the recent index, read and written in one place."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.keep = settings.recent_per_conv
        self._index = redis.register_script(_INDEX)

    async def add_many(self, messages: Sequence[StoredMessage]) -> None:
        """Index these messages (idempotent: one member per seq) and trim each conversation."""
        if self.keep <= 0 or not messages:
            return
        by_conv: dict[str, dict[int, StoredMessage]] = defaultdict(dict)
        for message in messages:
            by_conv[message.conv_id][message.seq] = message
        batch = ScriptPipeline(self.redis)
        conversations = list(by_conv.items())
        for first in range(0, len(conversations), CONVERSATIONS_PER_CALL):
            keys: list[str] = []
            args: list[object] = [self.keep, RECENT_TTL_S]
            for conv_id, by_seq in conversations[first : first + CONVERSATIONS_PER_CALL]:
                newest = sorted(by_seq)[-self.keep :]
                keys.append(recent_key(conv_id))
                args.append(len(newest))
                for seq in newest:
                    args.extend((seq, encode(by_seq[seq])))
            batch.call(self._index, keys, args)
        await batch.execute()

    async def range(
        self, conv_id: str, after_seq: int, limit: int
    ) -> tuple[list[StoredMessage], bool] | None:
        """Messages with seq > ``after_seq`` (at most ``limit``, ascending) and has_more.

        ``None`` when the index cannot answer exactly: empty, trimmed past
        ``after_seq + 1``, or with a hole (a lost Redis write) — read MySQL then.
        """
        if self.keep <= 0:
            return None
        key = recent_key(conv_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(key, 0, 0, withscores=True)
            pipe.zrangebyscore(key, f"({after_seq}", "+inf", start=0, num=limit + 1)
            lowest, found = await pipe.execute()
        if not lowest or int(lowest[0][1]) > after_seq + 1:
            return None
        messages = []
        for raw in found:
            try:
                messages.append(decode_stored_message(raw))
            except msgspec.DecodeError:
                log.error("recent index of %s holds an undecodable entry", conv_id)
                return None
        expected = range(after_seq + 1, after_seq + 1 + len(messages))
        if [m.seq for m in messages] != list(expected):
            return None
        has_more = len(messages) > limit
        return messages[:limit], has_more
