"""The Cassandra message archive against a real Cassandra node (the ``cassandra`` fixture)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from schemas.conversations import direct, message_id
from schemas.records import StoredMessage
from stack.testing import TestStack
from store.archive import open_archive
from store.history import HistoryReader
from store.messages_cassandra import CassandraArchive, migrate_session


def stored(conv: str, seq: int, sender: str = "a", to: str = "b", **extra: object) -> StoredMessage:
    return StoredMessage(
        msg_id=message_id(conv, seq),
        conv_id=conv,
        seq=seq,
        sender=sender,
        to=to,
        kind="chat",
        text=f"text {seq} of {conv} ✓",
        ts=1_700_000_000_000 + seq,
        client_msg_id=f"c{seq}",
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
async def archive(cassandra: TestStack) -> AsyncIterator[CassandraArchive]:
    opened = await open_archive(cassandra.settings, None, migrate=True)
    assert isinstance(opened, CassandraArchive)
    yield opened
    await opened.close()


async def test_migrations_create_the_schema_once(archive: CassandraArchive) -> None:
    keyspace = f"mmim_migrate_{secrets.token_hex(4)}"
    session = archive.session
    try:
        first = await asyncio.to_thread(migrate_session, session, keyspace)
        again = await asyncio.to_thread(migrate_session, session, keyspace)
        recorded = session.execute(f"SELECT version, name FROM {keyspace}.schema_migrations")
        columns = session.execute(
            "SELECT column_name, kind FROM system_schema.columns"
            " WHERE keyspace_name = %s AND table_name = 'messages'",
            (keyspace,),
        )
        kinds = {row.column_name: row.kind for row in columns}
    finally:
        await asyncio.to_thread(session.execute, f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
    assert first == [1] and again == []
    assert [(row.version, row.name) for row in recorded] == [(1, "keyspace_and_messages")]
    assert kinds["conv_id"] == "partition_key" and kinds["seq"] == "clustering"


async def test_store_batch_is_idempotent_and_history_pages_by_seq(
    archive: CassandraArchive, unique: Callable[[str], str]
) -> None:
    alice, bob = unique("alice"), unique("bob")
    conv = direct(alice, bob)
    notice = {"type": "friend_request", "from": alice, "n": [1, 2]}
    messages = [stored(conv, seq, alice, bob) for seq in range(1, 26)]
    messages[4] = stored(conv, 5, alice, bob, data=notice)

    await archive.store_batch(messages)
    # A replay after a crash, a duplicate inside one batch, and an empty batch change nothing.
    await archive.store_batch([*messages[10:], messages[10]])
    await archive.store_batch([])

    everything = await archive.history(conv, 0, 100)
    assert everything == messages
    assert everything[4].data == notice and everything[3].data is None
    assert [m.seq for m in await archive.history(conv, 10, 5)] == [11, 12, 13, 14, 15]
    assert await archive.history(conv, 25, 10) == []
    assert await archive.history(conv, 0, 0) == []
    assert await archive.history(direct(alice, unique("nobody")), 0, 10) == []


async def test_many_conversations_in_one_batch_stay_apart_and_sync_reads_them(
    archive: CassandraArchive, cassandra: TestStack, unique: Callable[[str], str]
) -> None:
    me = unique("me")
    convs = [direct(me, unique(f"peer{k}")) for k in range(40)]
    # 200 writes: more than one window of concurrent writes.
    batch = [stored(conv, seq) for seq in range(1, 6) for conv in convs]
    await archive.store_batch(batch)

    for conv in convs:
        assert [m.text for m in await archive.history(conv, 0, 10)] == [
            f"text {seq} of {conv} ✓" for seq in range(1, 6)
        ]

    # History sync's reader: nothing of these in the Redis recent index, so the
    # pages come from Cassandra, with has_more telling the client to ask again.
    redis = Redis.from_url(cassandra.settings.redis_url)
    reader = HistoryReader(redis, None, cassandra.settings)  # type: ignore[arg-type]
    try:
        first, more = await reader.page(convs[7], 0, 3)
        rest, more_after = await reader.page(convs[7], 3, 3)
    finally:
        await reader.close()
        await redis.aclose()
    assert [m.seq for m in first] == [1, 2, 3] and more is True
    assert [m.seq for m in rest] == [4, 5] and more_after is False
