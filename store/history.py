"""History sync's read path: the Redis recent index first, the message archive behind it."""

from __future__ import annotations

import asyncio

import aiomysql
from redis.asyncio import Redis

from config.settings import Settings
from schemas.records import StoredMessage
from store.archive import Archive, close_archive, open_archive
from store.messages import MessageArchive
from store.recent import RecentIndex


class HistoryReader:
    """Pages of a conversation after a given seq, for the SYNC op."""

    def __init__(
        self,
        redis: Redis,
        mysql_pool: aiomysql.Pool,
        settings: Settings,
        archive: Archive | None = None,
    ) -> None:
        self.recent = RecentIndex(redis, settings)
        self.settings = settings
        self.mysql_pool = mysql_pool
        # MySQL needs nothing opened; a Cassandra archive is connected on first use
        # (most syncs are answered by the recent index) unless one is passed in.
        if archive is None and settings.archive_backend == "mysql":
            archive = MessageArchive(mysql_pool)
        self.archive: Archive | None = archive
        self._owns_archive = False
        self._opening = asyncio.Lock()
        self.max_page = settings.sync_page_size

    async def page(
        self, conv_id: str, after_seq: int, limit: int
    ) -> tuple[list[StoredMessage], bool]:
        """Messages with seq > ``after_seq``, ascending, at most ``limit``; and has_more.

        ``limit`` is clamped to 1..IM_SYNC_PAGE_SIZE. The Redis index answers when
        it holds the whole range; otherwise the archive does (asking one row more
        than the page tells whether there is more).
        """
        limit = max(1, min(limit, self.max_page))
        after_seq = max(0, after_seq)
        cached = await self.recent.range(conv_id, after_seq, limit)
        if cached is not None:
            return cached
        archive = await self._archive()
        rows = await archive.history(conv_id, after_seq, limit + 1)
        return rows[:limit], len(rows) > limit

    async def _archive(self) -> Archive:
        async with self._opening:
            if self.archive is None:
                self.archive = await open_archive(self.settings, self.mysql_pool)
                self._owns_archive = True
            return self.archive

    async def close(self) -> None:
        """Close an archive this reader opened (a Cassandra connection); idempotent."""
        if self._owns_archive:
            archive, self.archive, self._owns_archive = self.archive, None, False
            await close_archive(archive)
