"""Offline lists, the recent index and history sync against the real Redis and MariaDB."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from schemas.conversations import direct, message_id
from schemas.records import StoredMessage, encode
from store.history import HistoryReader
from store.messages import MessageArchive
from store.mysql import close_pool, create_pool
from store.offline import (
    REMOVE_CHUNK,
    USERS_PER_ADD,
    WRITES_PER_ADD,
    OfflineStore,
    offline_key,
    retired_order_key,
)
from store.recent import RecentIndex, recent_key


def stored(conv: str, seq: int, ts: int, sender: str = "a", to: str = "b") -> StoredMessage:
    return StoredMessage(
        msg_id=message_id(conv, seq),
        conv_id=conv,
        seq=seq,
        sender=sender,
        to=to,
        text=f"message {seq}",
        ts=ts,
        client_msg_id=f"{conv}-{seq}",
    )


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[Any]:
    created = await create_pool(settings, maxsize=2)
    try:
        yield created
    finally:
        await close_pool(created)


async def test_offline_list_is_ordered_idempotent_and_emptied_by_acks(
    redis: Redis, settings: Settings, unique: Callable[[str], str]
) -> None:
    store = OfflineStore(redis, settings)
    user, alice, carol = unique("bob"), unique("alice"), unique("carol")
    with_alice, with_carol = direct(user, alice), direct(user, carol)
    # Same ts in two conversations, and two messages sharing a ts in one of them.
    messages = [
        stored(with_carol, 1, 2_000),
        stored(with_alice, 1, 1_000),
        stored(with_alice, 2, 2_000),
        stored(with_alice, 3, 2_000),
    ]
    await store.add_many([(user, m) for m in messages])
    await store.add_many([(user, messages[1])])  # a replay adds nothing

    oldest_first = sorted(messages, key=lambda m: (m.ts, m.conv_id, m.seq))
    pending = await store.pending(user)
    assert pending == oldest_first
    assert await store.count(user) == 4
    # A limit cutting through equal timestamps still returns the oldest, in seq order.
    assert await store.pending(user, limit=2) == oldest_first[:2]
    assert await store.pending(user, limit=3) == oldest_first[:3]

    assert await store.remove(user, [pending[0].msg_id, pending[1].msg_id, "unknown"]) == 2
    assert [m.msg_id for m in await store.pending(user)] == [m.msg_id for m in pending[2:]]
    assert 0 < await redis.ttl(offline_key(user)) <= settings.offline_ttl_s
    assert not await redis.exists(retired_order_key(user))  # one key per list now


async def test_offline_list_keeps_the_newest_when_over_the_cap(
    redis: Redis, settings: Settings, unique: Callable[[str], str]
) -> None:
    store = OfflineStore(redis, settings.model_copy(update={"offline_max_per_user": 5}))
    user = unique("bob")
    conv = direct(user, unique("alice"))
    await store.add_many([(user, stored(conv, seq, 1_000 + seq)) for seq in range(1, 9)])
    assert [m.seq for m in await store.pending(user)] == [4, 5, 6, 7, 8]
    assert await redis.hlen(offline_key(user)) == 5


async def test_a_list_written_with_the_retired_order_zset_is_still_read_and_emptied(
    redis: Redis, settings: Settings, unique: Callable[[str], str]
) -> None:
    # How lists were written before 2026-11-27: the body hash plus a zset of ts.
    store = OfflineStore(redis, settings)
    user = unique("bob")
    conv = direct(user, unique("alice"))
    old = [stored(conv, seq, 1_000 + seq) for seq in (1, 2)]
    await redis.hset(offline_key(user), mapping={m.msg_id: encode(m) for m in old})
    await redis.zadd(retired_order_key(user), {m.msg_id: m.ts for m in old})

    await store.add_many([(user, stored(conv, 3, 1_003))])
    assert [m.seq for m in await store.pending(user)] == [1, 2, 3]
    assert await store.remove(user, [m.msg_id for m in old]) == 2
    assert [m.seq for m in await store.pending(user)] == [3]


async def test_a_group_s_messages_are_listed_for_every_member_each_within_the_cap(
    redis: Redis, settings: Settings, unique: Callable[[str], str]
) -> None:
    store = OfflineStore(redis, settings.model_copy(update={"offline_max_per_user": 3}))
    conv = f"g:{unique('group')}"
    # More members than one script call takes, so the calls are split.
    members = [unique(f"member{i}") for i in range(USERS_PER_ADD + 7)]
    late = unique("late")
    await store.add_many([(late, stored(conv, 1, 1_001))])
    messages = [stored(conv, seq, 1_000 + seq) for seq in range(2, 6)]
    await store.add_many([(user, m) for m in messages for user in [*members, late]])

    for user in [members[0], members[USERS_PER_ADD], members[-1], late]:
        assert [m.seq for m in await store.pending(user)] == [3, 4, 5]
        assert await redis.hlen(offline_key(user)) == 3
        assert 0 < await redis.ttl(offline_key(user)) <= settings.offline_ttl_s
    pending = await store.pending_many([members[1], unique("nobody")])
    assert [m.seq for m in next(iter(pending.values()))] == [3, 4, 5]
    assert list(pending.values())[1] == []


async def test_many_messages_for_many_users_are_split_into_bounded_calls_and_all_listed(
    redis: Redis, settings: Settings, unique: Callable[[str], str]
) -> None:
    store = OfflineStore(redis, settings)
    conv = f"g:{unique('busy')}"
    messages = [stored(conv, seq, seq) for seq in range(1, 301)]
    users = [unique(f"u{i}") for i in range(WRITES_PER_ADD // len(messages) + 4)]
    await store.add_many([(user, m) for m in messages for user in users])
    for user in (users[0], users[-1]):
        assert [m.seq for m in await store.pending(user)] == list(range(1, 301))


async def test_acks_of_many_users_are_removed_together_each_counted_for_its_user(
    redis: Redis, settings: Settings, unique: Callable[[str], str]
) -> None:
    store = OfflineStore(redis, settings)
    conv = f"g:{unique('group')}"
    many = [stored(conv, seq, seq) for seq in range(1, REMOVE_CHUNK + 3)]
    ann, ben, cid = unique("ann"), unique("ben"), unique("cid")
    await store.add_many([(user, m) for m in many for user in (ann, ben)])
    await store.add_many([(cid, many[0])])
    counts = await store.remove_many(
        [
            (ann, [m.msg_id for m in many]),  # more than one call's share for one user
            (ben, [many[0].msg_id, many[0].msg_id, "never-listed"]),
            (cid, []),
            (ben, [many[1].msg_id]),
        ]
    )
    assert counts == [len(many), 1, 0, 1]
    assert await store.count(ann) == 0 and await redis.hlen(offline_key(ann)) == 0
    assert [m.seq for m in await store.pending(ben)] == list(range(3, REMOVE_CHUNK + 3))
    assert await store.count(cid) == 1


async def test_recent_index_answers_only_ranges_it_holds(
    redis: Redis, settings: Settings, unique: Callable[[str], str]
) -> None:
    index = RecentIndex(redis, settings.model_copy(update={"recent_per_conv": 10}))
    conv = direct(unique("a"), unique("b"))
    await index.add_many([stored(conv, seq, seq) for seq in range(1, 16)])
    await index.add_many([stored(conv, 15, 15)])  # idempotent
    assert await redis.zcard(recent_key(conv)) == 10  # seqs 6..15

    page = await index.range(conv, 5, 4)
    assert page is not None
    assert [m.seq for m in page[0]] == [6, 7, 8, 9] and page[1] is True
    last = await index.range(conv, 12, 10)
    assert last is not None and [m.seq for m in last[0]] == [13, 14, 15] and last[1] is False
    assert await index.range(conv, 2, 4) is None  # trimmed away: MySQL must answer
    assert await index.range(direct(unique("x"), unique("y")), 0, 4) is None

    # Several conversations in one batch, each indexed and trimmed on its own.
    other = direct(unique("c"), unique("d"))
    await index.add_many([stored(other, seq, seq) for seq in (1, 2, 3)] + [stored(conv, 16, 16)])
    assert await redis.zcard(recent_key(conv)) == 10  # seqs 7..16
    mixed = await index.range(other, 0, 5)
    assert mixed is not None and [m.seq for m in mixed[0]] == [1, 2, 3]


async def test_history_pages_come_from_mysql_behind_the_cache(
    redis: Redis, pool: Any, settings: Settings, unique: Callable[[str], str]
) -> None:
    small_cache = settings.model_copy(update={"recent_per_conv": 5, "sync_page_size": 4})
    archive = MessageArchive(pool)
    conv = direct(unique("a"), unique("b"))
    messages = [stored(conv, seq, 1_000 + seq) for seq in range(1, 12)]
    await archive.store_batch(messages)
    await archive.store_batch(messages[3:6])  # a replay changes nothing
    await RecentIndex(redis, small_cache).add_many(messages)

    reader = HistoryReader(redis, pool, small_cache)
    seen: list[int] = []
    after, has_more = 0, True
    while has_more:
        page, has_more = await reader.page(conv, after, 100)  # clamped to the page size 4
        assert 0 < len(page) <= 4
        seen.extend(m.seq for m in page)
        after = page[-1].seq
    assert seen == list(range(1, 12))
    assert (await reader.page(conv, 11, 4)) == ([], False)
    stored_rows = await archive.history(conv, 0, 100)
    assert [m.seq for m in stored_rows] == list(range(1, 12))
    assert stored_rows[0] == messages[0]


async def test_the_archive_is_keyed_by_conversation_and_seq(pool: Any) -> None:
    """Migration 0004: no index on random ids, so inserts stay fast as the table grows."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "SELECT index_name, column_name FROM information_schema.statistics"
            " WHERE table_schema = DATABASE() AND table_name = 'messages'"
            " ORDER BY index_name, seq_in_index"
        )
        indexes = [tuple(row) for row in await cur.fetchall()]
    assert indexes == [("PRIMARY", "conv_id"), ("PRIMARY", "seq")]
