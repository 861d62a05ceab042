"""Periodic work: announce this connector, refresh its users' routes, close idle connections."""

from __future__ import annotations

import asyncio
import logging
import time

from config.settings import Settings
from connector import metrics
from connector.frames import error_frame
from connector.sends import PendingSends
from connector.sessions import SessionRegistry
from schemas.errors import ErrorCode
from store.register import ConnectorInfo, RegisterStore

log = logging.getLogger(__name__)

# A closed connection whose peer does not take the last bytes is dropped after this.
CLOSE_GRACE_S = 2.0
# Sends whose result never came (the logic was down) are forgotten after this.
PENDING_SEND_MAX_AGE_S = 300.0


class Keepalive:
    """Announces the connector (seed: keepalive to the register store) and keeps routes alive."""

    def __init__(
        self,
        settings: Settings,
        register: RegisterStore,
        registry: SessionRegistry,
        pending: PendingSends,
    ) -> None:
        self.settings = settings
        self.register = register
        self.registry = registry
        self.pending = pending
        # Route keys live a few heartbeat timeouts; refreshing a few times per TTL is plenty.
        self.touch_every_s = max(settings.connector_keepalive_s, register.route_ttl_s / 4)
        self._task: asyncio.Task[None] | None = None

    def info(self) -> ConnectorInfo:
        return ConnectorInfo(
            connector_id=self.settings.connector_id,
            host=self.settings.advertised_host,
            port=self.settings.connector_port,
            connections=len(self.registry),
            capacity=self.settings.connector_capacity,
            ts_ms=int(time.time() * 1000),
        )

    async def announce(self) -> None:
        await self.register.announce_connector(self.info(), self.settings.connector_ttl_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keepalive")

    async def stop(self) -> None:
        """Stop announcing (draining: the connector is about to be withdrawn)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        last_touch = time.monotonic()
        while True:
            try:
                await self.announce()
                if time.monotonic() - last_touch >= self.touch_every_s:
                    last_touch = time.monotonic()
                    await self.register.touch_routes(self.registry.users())
                self.pending.expire(PENDING_SEND_MAX_AGE_S)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("keepalive failed: %r", error)
            await asyncio.sleep(self.settings.connector_keepalive_s)


class IdleSweeper:
    """Closes connections that did not log in in time or went silent (slowloris)."""

    def __init__(self, settings: Settings, registry: SessionRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.interval_s = min(1.0, settings.heartbeat_timeout_s / 4, settings.login_timeout_s / 4)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="idle-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def sweep(self, now: float | None = None) -> int:
        """Close what is overdue; return how many connections were closed."""
        now = time.monotonic() if now is None else now
        login_timeout = self.settings.login_timeout_s
        heartbeat_timeout = self.settings.heartbeat_timeout_s
        closed = 0
        for session in self.registry:
            if session.closing:
                if now - session.closing_since > CLOSE_GRACE_S:
                    session.abort()
                continue
            if not session.logged_in and now - session.opened > login_timeout:
                code, message = ErrorCode.NOT_LOGGED_IN, "no login in time"
            elif now - session.last_active > heartbeat_timeout:
                code, message = ErrorCode.HEARTBEAT_TIMEOUT, "no heartbeat in time"
            else:
                continue
            metrics.errors.labels(str(int(code))).inc()
            session.write(error_frame(code, message))
            session.close()
            closed += 1
        return closed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.sweep()
            except Exception:
                log.exception("idle sweep failed")
