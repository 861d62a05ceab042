"""Which message archive to use: MySQL (default) or Cassandra, by ``IM_ARCHIVE_BACKEND``.

Both offer ``store_batch(messages)`` (idempotent on msg_id) and
``history(conv_id, after_seq, limit)``; the persister writes through one and
history sync reads through the same. The MySQL archive borrows the caller's
pool; the Cassandra archive owns a driver cluster, closed by
:func:`close_archive`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from config.settings import Settings
from schemas.records import StoredMessage
from store.messages import MessageArchive


class Archive(Protocol):
    """What the persister and the history reader need from a message archive."""

    async def store_batch(self, messages: Sequence[StoredMessage]) -> None: ...

    async def history(self, conv_id: str, after_seq: int, limit: int) -> list[StoredMessage]: ...


async def open_archive(settings: Settings, mysql_pool: Any, *, migrate: bool = False) -> Archive:
    """The archive IM_ARCHIVE_BACKEND selects.

    ``migrate`` applies pending Cassandra schema migrations (the logic worker,
    the archive's writer, does; MySQL's are applied by ``store.migrate``).
    """
    if settings.archive_backend == "cassandra":
        # Imported here so the MySQL deployment never loads the Cassandra driver.
        from store.messages_cassandra import CassandraArchive

        return await CassandraArchive.open(settings, migrate=migrate)
    return MessageArchive(mysql_pool)


async def close_archive(archive: Archive | None) -> None:
    """Release what the archive owns (the Cassandra driver); the MySQL pool is the caller's."""
    close = getattr(archive, "close", None)
    if close is not None:
        await close()
