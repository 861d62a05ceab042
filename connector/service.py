"""The connector as one running service: its parts started in order, drained on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from auth.tokens import TokenService
from config.settings import Settings
from connector.http import make_app, serve
from connector.kafka import Publisher, PushQueue, ensure_push_topic
from connector.keepalive import IdleSweeper, Keepalive
from connector.push_consumer import PushConsumer
from connector.round_trips import CoalescingInbox, CoalescingRoutes
from connector.sends import PendingSends
from connector.server import ClientServer
from connector.sessions import SessionRegistry
from store.groups import GroupStore
from store.history import HistoryReader
from store.mysql import close_pool, create_pool
from store.offline import OfflineStore
from store.register import RegisterStore

log = logging.getLogger(__name__)

# After the clients are gone, keep draining the push queue this long so what is
# still routed here lands in the offline lists rather than waiting for a restart.
PUSH_GRACE_S = 1.0
# Each part gets at most this long to close once the drain deadline has passed.
PART_CLOSE_TIMEOUT_S = 1.0
REDIS_MAX_CONNECTIONS = 32
REDIS_WAIT_S = 5.0


class ConnectorService:
    """Wires Redis, MySQL, Kafka, the TCP server and the HTTP side of one connector."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connector_id = settings.connector_id
        self.registry = SessionRegistry()
        self.pending = PendingSends()
        # Bounded and blocking: a login storm queues for a connection instead of
        # opening one per client.
        self.redis: Redis = Redis.from_pool(
            BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_WAIT_S
            )
        )
        self.register = RegisterStore(self.redis, settings)
        self.offline = OfflineStore(self.redis, settings)
        self.publisher = Publisher(settings, self.connector_id)
        self.push_queue = PushQueue(settings, self.connector_id)
        self.keepalive = Keepalive(settings, self.register, self.registry, self.pending)
        self.sweeper = IdleSweeper(settings, self.registry)
        self.mysql_pool: Any = None
        self.server: ClientServer | None = None
        self.push_consumer: PushConsumer | None = None
        self.http_runner: Any = None

    async def healthy(self) -> bool:
        """Kafka producer started and Redis answering."""
        return self.publisher.started and bool(await self.redis.ping())

    async def start(self) -> None:
        """Bring everything up; the connector is announced last, once it can take clients."""
        settings = self.settings
        await self.redis.ping()
        self.mysql_pool = await create_pool(settings)
        history = HistoryReader(self.redis, self.mysql_pool, settings)
        await ensure_push_topic(settings, self.connector_id)
        await self.publisher.start()
        await self.push_queue.start()
        self.server = ClientServer(
            settings,
            registry=self.registry,
            pending=self.pending,
            register=self.register,
            routes=CoalescingRoutes(self.register),
            tokens=TokenService(settings, self.register),
            offline=CoalescingInbox(self.offline),
            history=history,
            publisher=self.publisher,
            groups=GroupStore(self.mysql_pool, self.redis),
        )
        self.push_consumer = PushConsumer(
            self.push_queue, self.registry, self.pending, self.offline
        )
        self.push_consumer.start()
        await self.server.start()
        self.sweeper.start()
        app = make_app(self.connector_id, self.healthy, lambda: len(self.registry))
        self.http_runner = await serve(app, settings.connector_host, settings.connector_http_port)
        await self.keepalive.announce()
        self.keepalive.start()
        log.info("connector %s up", self.connector_id)

    async def drain(self) -> None:
        """SIGTERM: leave the dispatcher's list, send clients elsewhere, flush, stop."""
        started = time.monotonic()
        budget = self.settings.drain_timeout_s
        log.info("connector %s draining", self.connector_id)

        def left() -> float:
            return max(0.0, budget - (time.monotonic() - started) - PART_CLOSE_TIMEOUT_S)

        await self.keepalive.stop()
        await self._bounded(self.register.withdraw_connector(self.connector_id), left())
        if self.server is not None:
            await self.server.drain(timeout_s=left() / 2)
        await asyncio.sleep(min(PUSH_GRACE_S, left() / 2))
        if self.push_consumer is not None:
            await self._bounded(self.push_consumer.stop(), left())
        await self.sweeper.stop()
        await self._bounded(self.push_queue.stop(), PART_CLOSE_TIMEOUT_S / 2)
        await self._bounded(self.publisher.stop(), PART_CLOSE_TIMEOUT_S / 2)
        await self.close()
        log.info("connector %s drained in %.1fs", self.connector_id, time.monotonic() - started)

    async def close(self) -> None:
        """Release the remaining connections (HTTP, MySQL, Redis)."""
        if self.http_runner is not None:
            await self._bounded(self.http_runner.cleanup(), PART_CLOSE_TIMEOUT_S / 4)
        if self.mysql_pool is not None:
            await self._bounded(close_pool(self.mysql_pool), PART_CLOSE_TIMEOUT_S / 4)
        await self._bounded(self.redis.aclose(), PART_CLOSE_TIMEOUT_S / 4)

    @staticmethod
    async def _bounded(awaitable: Any, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(awaitable, max(timeout_s, 0.05))
        except Exception as error:
            log.warning("shutdown step did not finish cleanly: %r", error)
