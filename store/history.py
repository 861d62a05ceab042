"""History sync's read path: the Redis recent index first, MySQL behind it."""

from __future__ import annotations

import aiomysql
from redis.asyncio import Redis

from config.settings import Settings
from schemas.records import StoredMessage
from store.messages import MessageArchive
from store.recent import RecentIndex


class HistoryReader:
    """Pages of a conversation after a given seq, for the SYNC op."""

    def __init__(self, redis: Redis, mysql_pool: aiomysql.Pool, settings: Settings) -> None:
        self.recent = RecentIndex(redis, settings)
        self.archive = MessageArchive(mysql_pool)
        self.max_page = settings.sync_page_size

    async def page(
        self, conv_id: str, after_seq: int, limit: int
    ) -> tuple[list[StoredMessage], bool]:
        """Messages with seq > ``after_seq``, ascending, at most ``limit``; and has_more.

        ``limit`` is clamped to 1..IM_SYNC_PAGE_SIZE. The Redis index answers when
        it holds the whole range; otherwise MySQL does (asking one row more than
        the page tells whether there is more).
        """
        limit = max(1, min(limit, self.max_page))
        after_seq = max(0, after_seq)
        cached = await self.recent.range(conv_id, after_seq, limit)
        if cached is not None:
            return cached
        rows = await self.archive.history(conv_id, after_seq, limit + 1)
        return rows[:limit], len(rows) > limit
