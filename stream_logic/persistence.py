"""The persister: sequenced messages into MySQL and the Redis recent index (seed steps 13-14).

It reads the persist topic in its own agent, so a slow or unavailable database
delays only this topic (Faust pauses its partitions when the buffer fills); the
sequencer and delivery keep going. MySQL is written before Redis, so the recent
index never holds a message the archive lacks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec

from schemas.records import StoredMessage, decode_stored_message
from store.archive import Archive
from store.recent import RecentIndex
from stream_logic.pipeline import Incoming
from stream_logic.retrying import until_done

log = logging.getLogger(__name__)


class Persister:
    """Writes batches of the persist topic; returns only when both stores have them."""

    def __init__(self, archive: Archive, recent: RecentIndex) -> None:
        self.archive = archive
        self.recent = recent

    def decode(self, records: Sequence[Incoming]) -> list[StoredMessage]:
        messages = []
        for record in records:
            try:
                messages.append(decode_stored_message(record.value))
            except msgspec.DecodeError as error:
                log.error(
                    "skipping undecodable persist record [%d]@%d: %s: %r",
                    record.partition,
                    record.offset,
                    error,
                    record.value[:200],
                )
        return messages

    async def handle(self, records: Sequence[Incoming]) -> int:
        """Store one batch (idempotent, retried until done); returns how many messages."""
        messages = self.decode(records)
        if messages:
            await until_done(lambda: self.archive.store_batch(messages), "archiving to MySQL")
            await until_done(lambda: self.recent.add_many(messages), "updating the recent index")
        return len(messages)
