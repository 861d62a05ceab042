"""PUSH_ACKs of all sessions, removed from the offline lists in shared Redis round trips.

Each PUSH_ACK used to cost its own MULTI/EXEC round trip; under load that was the
connector's largest cost (py-spy: ~22% of the receiving connector). Acks that
arrive while a removal is in flight wait for the next one, so one round trip
carries the acks of every session that answered meanwhile. A caller still
returns only once its ids are gone from Redis, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from schemas.records import StoredMessage

log = logging.getLogger(__name__)


class OfflineLists(Protocol):
    async def pending(self, user: str, limit: int | None = None) -> list[StoredMessage]: ...
    async def remove_many(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[int]: ...


class CoalescingInbox:
    """The offline lists as the client server sees them, with acks coalesced."""

    def __init__(self, offline: OfflineLists) -> None:
        self.offline = offline
        self._waiting: list[tuple[str, Sequence[str], asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def pending(self, user: str, limit: int | None = None) -> list[StoredMessage]:
        """The user's listed messages, oldest first."""
        return await self.offline.pending(user, limit)

    async def remove(self, user: str, msg_ids: Sequence[str]) -> int:
        """Drop acknowledged messages; returns once they are gone (how many were listed)."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((user, msg_ids, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="ack-flusher")
        return await done

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                counts = await self.offline.remove_many([(u, ids) for u, ids, _ in batch])
            except Exception as error:  # each caller sees the failure, as without batching
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            for (_, _, done), count in zip(batch, counts, strict=True):
                if not done.done():
                    done.set_result(count)
