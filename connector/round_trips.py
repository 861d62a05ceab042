"""Redis round trips shared by every session that needs one while another is in flight.

Under load each login (bind, offline read), disconnect (unbind) and PUSH_ACK
(removal) paid its own round trip, and redis-py's per-call overhead (pool
checkout with its timeout, command packing) was most of the connector's CPU in a
login storm. Here a call that arrives while a round trip is in flight waits for
the next one, which carries every call that arrived meanwhile. Each caller still
returns only once its own part is done in Redis, with its own result or error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from schemas.errors import AuthError
from schemas.records import StoredMessage
from store.register import BindRequest, SessionRoute

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class Coalescer(Generic[ItemT, ResultT]):
    """Runs ``run_many`` over every item queued while the previous run was in flight.

    ``run_many`` returns one result per item, in order; a result that is an
    exception is raised to that item's caller alone. If ``run_many`` raises,
    every caller of that run sees the error.
    """

    def __init__(
        self,
        run_many: Callable[[list[ItemT]], Awaitable[Sequence[ResultT | Exception]]],
        name: str,
    ) -> None:
        self._run_many = run_many
        self._name = name
        self._waiting: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, item: ItemT) -> ResultT:
        done: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name=self._name)
        return await done

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                results = await self._run_many([item for item, _ in batch])
            except Exception as error:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            for (_, done), result in zip(batch, results, strict=True):
                if done.done():
                    continue  # its caller was cancelled (the client left)
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result(result)


class OfflineLists(Protocol):
    async def pending_many(self, users: Sequence[str]) -> dict[str, list[StoredMessage]]: ...
    async def remove_many(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[int]: ...


class CoalescingInbox:
    """The offline lists as the client server sees them: reads and acks coalesced."""

    def __init__(self, offline: OfflineLists) -> None:
        self.offline = offline
        self._pending = Coalescer(self._pending_many, "offline-reader")
        self._remove = Coalescer(offline.remove_many, "ack-flusher")

    async def pending(self, user: str) -> list[StoredMessage]:
        """Every message listed for ``user``, oldest first."""
        return await self._pending(user)

    async def remove(self, user: str, msg_ids: Sequence[str]) -> int:
        """Drop acknowledged messages; returns once they are gone (how many were listed)."""
        return await self._remove((user, msg_ids))

    async def _pending_many(self, users: list[str]) -> list[list[StoredMessage]]:
        found = await self.offline.pending_many(users)
        return [found[user] for user in users]


class RouteStore(Protocol):
    async def bind_many(
        self, requests: Sequence[BindRequest]
    ) -> Sequence[SessionRoute | AuthError | None]: ...
    async def unbind_many(self, sessions: Sequence[tuple[str, str, str]]) -> int: ...


class CoalescingRoutes:
    """Session routes as the client server sees them: binds and unbinds coalesced."""

    def __init__(self, register: RouteStore) -> None:
        self._bind = Coalescer(register.bind_many, "route-binder")
        self._unbind = Coalescer(self._unbind_many, "route-unbinder")
        self._register = register

    async def bind(self, request: BindRequest) -> SessionRoute | None:
        """Bind one login; the route it replaced. Raises ``AuthError`` for a revoked token."""
        return await self._bind(request)

    async def unbind(self, user: str, device: str, session_id: str) -> None:
        """Delete the device's route if it still names ``session_id``."""
        await self._unbind((user, device, session_id))

    async def _unbind_many(self, sessions: list[tuple[str, str, str]]) -> list[None]:
        await self._register.unbind_many(sessions)
        return [None] * len(sessions)
