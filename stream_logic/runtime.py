"""The worker's connections to Redis, MySQL and Kafka (outputs), opened and closed with the app."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis

from config.settings import Settings
from store.archive import Archive, close_archive, open_archive
from store.groups import GroupStore
from store.mysql import close_pool, create_pool
from store.offline import OfflineStore
from store.recent import RecentIndex
from store.register import RegisterStore
from stream_logic.publishing import OutputProducer

log = logging.getLogger(__name__)

# The persister writes one batch at a time and member sets are read from MySQL
# only on a cache miss; a few connections are plenty.
MYSQL_POOL_SIZE = 4


class Runtime:
    """Adapters shared by the agents; ``ready`` is set once all connections are up."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis: Redis = Redis.from_url(settings.redis_url)
        self.register = RegisterStore(self.redis, settings)
        self.offline = OfflineStore(self.redis, settings)
        self.recent = RecentIndex(self.redis, settings)
        self.outputs = OutputProducer(settings, client_id=f"{settings.logic_app_id}-outputs")
        self.mysql_pool: Any = None
        self.archive: Archive | None = None
        self.groups: GroupStore | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        """Open everything, retrying until the backends answer (they may start after us)."""
        delay = 0.5
        while True:
            try:
                await self.redis.ping()
                if not self.outputs.started:
                    await self.outputs.start()
                if self.mysql_pool is None:
                    self.mysql_pool = await create_pool(self.settings, maxsize=MYSQL_POOL_SIZE)
                    self.groups = GroupStore(self.mysql_pool, self.redis)
                if self.archive is None:  # MySQL or Cassandra, by IM_ARCHIVE_BACKEND
                    self.archive = await open_archive(self.settings, self.mysql_pool, migrate=True)
                break
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any backend failure: wait and retry
                log.warning("backends not ready (%r); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.ready.set()
        log.info("stream logic connected to Redis, MySQL and Kafka")

    async def stop(self) -> None:
        self.ready.clear()
        await self.outputs.stop()
        await close_archive(self.archive)
        self.archive = None
        if self.mysql_pool is not None:
            await close_pool(self.mysql_pool)
            self.mysql_pool = None
        await self.redis.aclose()
