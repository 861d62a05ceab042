"""The permanent message record in MySQL/MariaDB (table ``messages``, seed step 13).

The table is keyed by (conv_id, seq) (migration 0004): an insert lands on the
last page of its conversation, and history sync reads one range of the key.
Writes are batched and idempotent: the persister may write the same sequenced
message twice (a replay after a crash) with the same (conv_id, seq), and the
second write changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import aiomysql
import msgspec

from schemas.records import StoredMessage

log = logging.getLogger(__name__)

# ``data`` (migration 0003): the JSON payload of system messages, NULL otherwise.
_COLUMNS = "msg_id, conv_id, seq, sender, recipient, group_id, kind, text, ts, client_msg_id, data"

# aiomysql turns executemany of this form into multi-row INSERTs. The no-op
# update makes a duplicate (conv_id, seq) a silent success.
_INSERT = (
    f"INSERT INTO messages ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE msg_id = msg_id"
)
_HISTORY = f"SELECT {_COLUMNS} FROM messages WHERE conv_id = %s AND seq > %s ORDER BY seq LIMIT %s"


def _row(message: StoredMessage) -> tuple[Any, ...]:
    return (
        message.msg_id,
        message.conv_id,
        message.seq,
        message.sender,
        message.to,
        message.group_id,
        message.kind,
        message.text,
        message.ts,
        message.client_msg_id,
        encode_data(message.data),
    )


def encode_data(data: dict[str, Any] | None) -> str | None:
    """A system message's payload as stored in an archive column (JSON text)."""
    return None if data is None else msgspec.json.encode(data).decode()


def decode_data(raw: str | bytes | None, msg_id: str) -> dict[str, Any] | None:
    """The payload back from its column; a bad one is logged and dropped, not fatal."""
    if raw is None:
        return None
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        log.error("message %s has an undecodable data column", msg_id)
        return None
    return value if isinstance(value, dict) else None


def _message(row: Sequence[Any]) -> StoredMessage:
    msg_id, conv_id, seq, sender, recipient, group_id, kind, text, ts, client_msg_id, data = row
    return stored_message(
        msg_id, conv_id, seq, sender, recipient, group_id, kind, text, ts, client_msg_id, data
    )


def stored_message(
    msg_id: str,
    conv_id: str,
    seq: int,
    sender: str,
    recipient: str | None,
    group_id: str | None,
    kind: Any,
    text: str,
    ts: int,
    client_msg_id: str,
    data: str | bytes | None,
) -> StoredMessage:
    """A StoredMessage from an archive's columns (both archives store the same ones)."""
    return StoredMessage(
        msg_id=msg_id,
        conv_id=conv_id,
        seq=int(seq),
        sender=sender,
        to=recipient,
        group_id=group_id,
        kind=kind,
        text=text,
        data=decode_data(data, msg_id),
        ts=int(ts),
        client_msg_id=client_msg_id,
    )


class MessageArchive:
    """Every SQL statement on ``messages``, in one place."""

    def __init__(self, pool: aiomysql.Pool) -> None:
        self.pool = pool

    async def store_batch(self, messages: Sequence[StoredMessage]) -> None:
        """Insert the messages in one round trip; already stored ones are left alone."""
        if not messages:
            return
        unique = {message.msg_id: message for message in messages}
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.executemany(_INSERT, [_row(m) for m in unique.values()])

    async def history(self, conv_id: str, after_seq: int, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` messages of the conversation with seq > ``after_seq``, ascending."""
        if limit <= 0:
            return []
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(_HISTORY, (conv_id, after_seq, limit))
            rows = await cur.fetchall()
        return [_message(row) for row in rows]
