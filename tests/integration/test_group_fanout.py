"""Group fan-out, system messages and broadcasts through the logic worker on the real stack.

As in test_stream_logic.py: the worker runs as a real process with its own app id
and topics; client messages are produced straight to its msg topic (as a
connector or the push service would); routes point at stand-in connector ids
registered in Redis, and their push topics are read with real consumers. Groups
and members are real MySQL rows (store/groups.py).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

from config.settings import Settings
from schemas.conversations import BROADCAST, direct, group, message_id, system
from schemas.errors import ErrorCode
from schemas.records import ClientMessage, PushRecord, StoredMessage, decode_push_record, encode
from schemas.topics import push_topic
from store.groups import GroupStore
from store.history import HistoryReader
from store.messages import MessageArchive
from store.mysql import close_pool, create_pool
from store.offline import OfflineStore, offline_key
from store.register import ConnectorInfo, RegisterStore
from tests.integration.conftest import own_deployment

TEST_PARTITIONS = 4
WAIT_S = 60.0


class PushReader:
    """Reads one push topic from its start in the background, noting when each record came."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
        )
        self.topic = topic
        self.records: list[tuple[float, PushRecord]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partition = TopicPartition(self.topic, 0)
        self.consumer.assign([partition])
        await self.consumer.seek_to_beginning(partition)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in batch.values():
                self.records.extend((now, decode_push_record(r.value)) for r in records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.consumer.stop()

    def of_kind(self, kind: str, conv_id: str | None = None) -> list[PushRecord]:
        return [
            record
            for _, record in self.records
            if record.kind == kind
            and (conv_id is None or (record.message and record.message.conv_id == conv_id))
        ]

    def results(self) -> list[Any]:
        return [r.result for r in self.of_kind("send_result") if r.result is not None]


async def eventually(check: Callable[[], Any], what: str, within_s: float = WAIT_S) -> None:
    """Poll ``check`` (plain or async) until it is true."""
    deadline = time.monotonic() + within_s
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@dataclass
class Deployment:
    """One isolated logic worker with two stand-in connectors, "a" and "b"."""

    settings: Settings
    redis: Redis
    mysql: Any
    producer: AIOKafkaProducer
    connectors: dict[str, str]
    readers: dict[str, PushReader] = field(default_factory=dict)

    @property
    def register(self) -> RegisterStore:
        return RegisterStore(self.redis, self.settings)

    @property
    def groups(self) -> GroupStore:
        return GroupStore(self.mysql, self.redis)

    @property
    def offline(self) -> OfflineStore:
        return OfflineStore(self.redis, self.settings)

    async def send(self, *messages: ClientMessage) -> None:
        pending = [
            await self.producer.send(
                self.settings.msg_topic, encode(message), key=message.conv_id.encode()
            )
            for message in messages
        ]
        await asyncio.gather(*pending)

    async def bind(self, user: str, device: str, connector: str) -> None:
        await self.register.bind_session(user, device, self.connectors[connector], user + device)


@pytest.fixture
async def deployment(
    settings: Settings,
    launch: Any,
    port: Callable[[], int],
    unique: Callable[[str], str],
) -> AsyncIterator[Deployment]:
    tag = unique("groups")
    env, ours = own_deployment(settings, tag, partitions=TEST_PARTITIONS)
    connectors = {"a": unique("conn-a"), "b": unique("conn-b")}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(push_topic(ours, c), 1, 1) for c in connectors.values()])
    redis = Redis.from_url(settings.redis_url)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    pool = await create_pool(settings, maxsize=2)
    register = RegisterStore(redis, ours)
    for connector_id in connectors.values():
        info = ConnectorInfo(connector_id, "127.0.0.1", 1, 0, 100, int(time.time() * 1000))
        await register.announce_connector(info, ttl_s=600)
    deployment = Deployment(ours, redis, pool, producer, connectors)
    for name, connector_id in connectors.items():
        deployment.readers[name] = PushReader(ours, push_topic(ours, connector_id))
        await deployment.readers[name].start()
    web_port = port()
    launch(
        "stream_logic",
        name="logic",
        env={**env, "IM_LOGIC_WEB_PORT": str(web_port)},
        health_url=f"http://127.0.0.1:{web_port}/healthz",
    )
    try:
        yield deployment
    finally:
        for reader in deployment.readers.values():
            await reader.stop()
        for connector_id in connectors.values():
            await register.withdraw_connector(connector_id)
        await producer.stop()
        await close_pool(pool)
        await redis.aclose()
        topics = [t for t in await admin.list_topics() if t.startswith((f"{tag}.", f"{tag}-"))]
        if topics:
            await admin.delete_topics(topics)
        await admin.close()
        shutil.rmtree(Path(tempfile.gettempdir()) / f"mmim-logic-{tag}", ignore_errors=True)


def group_send(
    sender: str,
    group_id: str,
    client_msg_id: str,
    reply_connector: str | None,
    device: str = "",
    sender_is_member: bool | None = None,
) -> ClientMessage:
    return ClientMessage(
        client_msg_id=client_msg_id,
        sender=sender,
        sender_device=device,
        conv_id=group(group_id),
        kind="group",
        group_id=group_id,
        text=f"text of {client_msg_id}",
        received_ts=int(time.time() * 1000),
        reply_connector=reply_connector,
        sender_is_member=sender_is_member,
    )


def chat(sender: str, to: str, client_msg_id: str, reply_connector: str) -> ClientMessage:
    return ClientMessage(
        client_msg_id=client_msg_id,
        sender=sender,
        sender_device="phone",
        conv_id=direct(sender, to),
        to=to,
        text=f"text of {client_msg_id}",
        received_ts=int(time.time() * 1000),
        reply_connector=reply_connector,
    )


def notice(client_msg_id: str, *, to: str | None = None, group_id: str | None = None, **data: Any):
    """A system message as the push service publishes it (push/publisher.py)."""
    conv_id = system(to) if to else group(group_id) if group_id else BROADCAST
    return ClientMessage(
        client_msg_id=client_msg_id,
        sender="system",
        conv_id=conv_id,
        kind="system",
        to=to,
        group_id=group_id,
        text=f"notice {client_msg_id}",
        data=data or None,
        received_ts=int(time.time() * 1000),
    )


async def archived(d: Deployment, conv_id: str, count: int) -> list[StoredMessage]:
    archive = MessageArchive(d.mysql)
    rows: list[StoredMessage] = []

    async def enough() -> bool:
        rows[:] = await archive.history(conv_id, 0, count + 10)
        return len(rows) >= count

    await eventually(enough, f"{count} archived messages of {conv_id}")
    return rows


async def drop_group(d: Deployment, group_id: str, users: list[str]) -> None:
    """Leave the shared MySQL and Redis as we found them."""
    async with d.mysql.acquire() as conn, conn.cursor() as cur:
        await cur.execute("DELETE FROM chat_groups WHERE group_id = %s", (group_id,))
    await d.groups.invalidate(group_id)
    for start in range(0, len(users), 500):
        chunk = users[start : start + 500]
        await d.redis.delete(*[offline_key(u) for u in chunk])


async def test_the_connector_s_membership_verdict_decides_so_replays_judge_alike(
    deployment: Deployment, unique: Callable[[str], str]
) -> None:
    """A send accepted at the connector is sequenced even if its sender left a moment
    later: the verdict is in the record, so a replay after a crash decides the same."""
    d = deployment
    alice, bob = unique("alice"), unique("bob")
    team = await d.groups.create("team", alice)
    gid = team.group_id
    await d.groups.add_members(gid, [bob])
    a = d.readers["a"]
    try:
        await d.send(group_send(alice, gid, "before", d.connectors["a"], "phone", True))
        await eventually(lambda: len(a.results()) >= 1, "the first send result")
        assert await d.groups.remove_member(gid, alice)
        # Accepted at the connector before she left (or the same record replayed) ...
        await d.send(group_send(alice, gid, "accepted", d.connectors["a"], "phone", True))
        # ... while a record without a verdict is looked up now: she is no member.
        await d.send(group_send(alice, gid, "unchecked", d.connectors["a"], "phone"))
        await eventually(lambda: len(a.results()) >= 3, "three send results")
        results = {r.client_msg_id: r for r in a.results() if r.sender == alice}
        assert (results["before"].seq, results["accepted"].seq) == (1, 2)
        assert results["accepted"].error_code is None
        assert (results["unchecked"].error_code, results["unchecked"].seq) == (
            ErrorCode.NOT_A_MEMBER,
            None,
        )
    finally:
        await drop_group(d, gid, [alice, bob])


async def test_group_of_four_across_two_connectors_with_one_member_offline(
    deployment: Deployment, unique: Callable[[str], str]
) -> None:
    d = deployment
    alice, bob, carol, dave, eve = (unique(n) for n in ("alice", "bob", "carol", "dave", "eve"))
    team = await d.groups.create("team", alice)
    gid = team.group_id
    await d.groups.add_members(gid, [bob, carol, dave])
    # alice writes from her phone on a; her laptop on b gets a copy. dave is offline.
    await d.bind(alice, "phone", "a")
    await d.bind(alice, "laptop", "b")
    await d.bind(bob, "phone", "a")
    await d.bind(carol, "phone", "b")
    await d.bind(eve, "phone", "a")
    conv = group(gid)
    a, b = d.readers["a"], d.readers["b"]
    total = 10
    try:
        await d.send(
            *(group_send(alice, gid, f"m{i}", d.connectors["a"], "phone") for i in range(5))
        )
        await d.send(group_send(eve, gid, "intruder", d.connectors["a"], "phone"))
        await d.send(
            *(group_send(alice, gid, f"m{i}", d.connectors["a"], "phone") for i in range(5, total))
        )
        await d.send(group_send(alice, gid, "m3", d.connectors["a"], "phone"))  # a client retry
        # Notice ids are unique: (sender, client_msg_id) is unique in the shared archive.
        await d.send(notice(unique("welcome"), group_id=gid, kind="welcome"))

        await eventually(lambda: len(a.results()) >= total + 2, "send results")
        await eventually(lambda: len(b.of_kind("deliver", conv)) >= total + 1, "deliveries on b")
        await eventually(lambda: len(a.of_kind("deliver", conv)) >= total + 1, "deliveries on a")

        results = {r.client_msg_id: r for r in a.results() if r.sender == alice}
        assert [results[f"m{i}"].seq for i in range(total)] == list(range(1, total + 1))
        refused = [r for r in a.results() if r.sender == eve]
        assert [(r.error_code, r.seq) for r in refused] == [(ErrorCode.NOT_A_MEMBER, None)]

        on_a, on_b = a.of_kind("deliver", conv), b.of_kind("deliver", conv)
        print(
            f"\ngroup of 4 on two connectors: a got {len(on_a)} records, b got {len(on_b)},"
            f" dave offline: {await d.offline.count(dave)} messages"
        )
        # One record per message and connector, in group seq order, listing its members there.
        assert [r.message.seq for r in on_a] == list(range(1, total + 2))
        assert [r.message.seq for r in on_b] == list(range(1, total + 2))
        assert all(r.recipients == [bob] for r in on_a[:total])
        assert all(r.recipients == [carol, alice] for r in on_b[:total])
        assert all(r.exclude_device == "phone" for r in on_b[:total])
        assert all(r.message.msg_id == message_id(conv, r.message.seq) for r in on_a)
        assert [r.message.text for r in on_a[:total]] == [f"text of m{i}" for i in range(total)]
        # The push service's notice reaches every member, the sender of nothing included.
        welcome_a, welcome_b = on_a[total], on_b[total]
        assert welcome_a.message.data == {"kind": "welcome"} and welcome_a.message.kind == "system"
        assert sorted(welcome_a.recipients) == sorted([alice, bob])
        assert sorted(welcome_b.recipients) == sorted([alice, carol])
        assert welcome_a.exclude_device is None
        # The non-member's message went nowhere.
        assert not [r for _, r in a.records + b.records if r.message and r.message.sender == eve]

        # dave, offline, has every group message waiting, in seq order.
        waiting = await d.offline.pending(dave)
        assert [m.seq for m in waiting] == list(range(1, total + 2))
        assert await d.offline.count(alice) == 0  # no offline copies for the sender

        rows = await archived(d, conv, total + 1)
        assert [m.seq for m in rows] == list(range(1, total + 2))
        assert rows[-1].data == {"kind": "welcome"} and rows[0].group_id == gid
    finally:
        await drop_group(d, gid, [alice, bob, carol, dave, eve])


async def test_system_messages_carry_their_data_to_push_offline_list_and_archive(
    deployment: Deployment, unique: Callable[[str], str]
) -> None:
    d = deployment
    online, away = unique("online"), unique("away")
    await d.bind(online, "phone", "a")
    payload = {"type": "friend_request", "from": unique("alice"), "nested": {"n": [1, 2]}}
    try:
        await d.send(
            notice(unique("n"), to=online, **payload), notice(unique("n"), to=away, **payload)
        )
        a = d.readers["a"]
        await eventually(lambda: a.of_kind("deliver", system(online)), "the online notice")
        pushed = a.of_kind("deliver", system(online))[0]
        assert pushed.recipients == [online]
        assert (pushed.message.kind, pushed.message.sender, pushed.message.data) == (
            "system",
            "system",
            payload,
        )

        async def listed() -> bool:
            return await d.offline.count(away) == 1

        await eventually(listed, "the offline notice")
        (waiting,) = await d.offline.pending(away)
        assert waiting.data == payload and waiting.conv_id == system(away)

        (row,) = await archived(d, system(away), 1)
        assert row.data == payload and row.kind == "system" and row.to == away
        page, _ = await HistoryReader(d.redis, d.mysql, d.settings).page(system(away), 0, 10)
        assert [m.data for m in page] == [payload]
    finally:
        await d.redis.delete(offline_key(away))


async def test_a_broadcast_reaches_each_live_connector_once_and_no_offline_list(
    deployment: Deployment, unique: Callable[[str], str]
) -> None:
    d = deployment
    away = unique("away")
    await d.bind(unique("someone"), "phone", "a")
    await d.send(notice(unique("b"), note="maintenance"))
    for name in ("a", "b"):
        reader = d.readers[name]
        await eventually(lambda r=reader: r.of_kind("broadcast"), f"the broadcast on {name}")
    await asyncio.sleep(1)  # a second record would have arrived by now
    for name in ("a", "b"):
        (record,) = d.readers[name].of_kind("broadcast")
        assert record.recipients == [] and record.message.conv_id == BROADCAST
        assert record.message.data == {"note": "maintenance"}
    assert await d.offline.count(away) == 0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def test_a_5000_member_group_does_not_stall_one_to_one_traffic(
    deployment: Deployment, unique: Callable[[str], str]
) -> None:
    d = deployment
    owner = unique("owner")
    team = await d.groups.create("big", owner)
    gid = team.group_id
    members = [f"{owner}-m{i}" for i in range(4_999)]
    await d.groups.add_members(gid, members)
    # Half the members are online on connector b, half offline.
    online, offline = members[::2], members[1::2]
    for start in range(0, len(online), 20):
        await asyncio.gather(*(d.bind(user, "phone", "b") for user in online[start : start + 20]))
    alice, bob = unique("alice"), unique("bob")
    await d.bind(bob, "phone", "a")
    a, b = d.readers["a"], d.readers["b"]
    group_messages = 3
    try:
        sent_at: dict[str, float] = {}
        fanout_started = 0.0

        async def one_to_one() -> None:
            for i in range(150):
                message = chat(alice, bob, f"c{i}", d.connectors["a"])
                sent_at[message.client_msg_id] = time.monotonic()
                await d.send(message)
                await asyncio.sleep(0.02)

        async def group_sends() -> None:
            nonlocal fanout_started
            await asyncio.sleep(1.0)
            fanout_started = time.monotonic()
            await d.send(
                *(group_send(owner, gid, f"g{i}", d.connectors["a"]) for i in range(group_messages))
            )

        await asyncio.gather(one_to_one(), group_sends())
        conv = group(gid)
        await eventually(lambda: len(b.of_kind("deliver", conv)) >= group_messages, "fan-out")
        fanout_done = max(t for t, r in b.records if r.kind == "deliver")
        await eventually(lambda: len(a.of_kind("deliver", direct(alice, bob))) >= 150, "1:1")

        latencies = {
            r.message.client_msg_id: (t - sent_at[r.message.client_msg_id]) * 1000
            for t, r in a.records
            if r.kind == "deliver" and r.message and r.message.conv_id == direct(alice, bob)
        }
        during = [
            ms for cid, ms in latencies.items() if fanout_started <= sent_at[cid] <= fanout_done
        ]
        overall = list(latencies.values())
        print(
            f"\n5,000-member group, {group_messages} messages fanned out in"
            f" {(fanout_done - fanout_started) * 1000:.0f} ms;"
            f" 1:1 latency send→push record: during fan-out ({len(during)} msgs)"
            f" p50={percentile(during or overall, 0.5):.1f} ms"
            f" p99={percentile(during or overall, 0.99):.1f} ms;"
            f" overall ({len(overall)}) p50={statistics.median(overall):.1f} ms"
            f" p99={percentile(overall, 0.99):.1f} ms"
        )
        # Every 1:1 message arrived, in order.
        assert sorted(latencies) == sorted(sent_at)
        seqs = [r.message.seq for r in a.of_kind("deliver", direct(alice, bob))]
        assert seqs == list(range(1, 151))

        # Every member got every group message: online ones in one record per message on b...
        records = b.of_kind("deliver", conv)
        assert [r.message.seq for r in records] == list(range(1, group_messages + 1))
        assert all(sorted(r.recipients) == sorted(online) for r in records)
        # ... the others on their offline lists.
        async with d.redis.pipeline(transaction=False) as pipe:
            for user in offline:
                pipe.hlen(offline_key(user))
            counts = await pipe.execute()
        assert set(counts) == {group_messages}
        assert await d.offline.count(owner) == 0
    finally:
        for start in range(0, len(online), 20):
            chunk = online[start : start + 20]
            await asyncio.gather(
                *(d.register.unbind_session(u, "phone", u + "phone") for u in chunk)
            )
        await drop_group(d, gid, [owner, *members])
