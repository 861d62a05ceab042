"""The Faust logic worker as a real process on the real stack.

Client messages are produced straight to the msg topic (as a connector would),
for users whose routes point at a stand-in connector id registered in Redis
(real register-store data); its push topic is read with a real consumer. Each
test gets its own app id and topics, so workers and consumer groups never mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from config.settings import Settings
from schemas.conversations import direct, message_id
from schemas.errors import ErrorCode
from schemas.records import ClientMessage, PushRecord, decode_push_record, encode
from schemas.topics import push_topic
from store.history import HistoryReader
from store.messages import MessageArchive
from store.mysql import close_pool, create_pool
from store.offline import OfflineStore
from store.register import ConnectorInfo, RegisterStore
from stream_logic.rebalance_safe_consumer import ActivePartitions, seek_to_committed_or_start
from tests.integration.conftest import create_topic, own_deployment

TEST_PARTITIONS = 4


@dataclass
class Logic:
    """One isolated logic deployment: its settings, env for the workers, and helpers."""

    settings: Settings
    env: dict[str, str]
    connector_id: str
    launch: Any
    port: Callable[[], int]
    redis: Redis
    producer: AIOKafkaProducer
    mysql: Any
    workers: list[Any] = field(default_factory=list)

    @property
    def register(self) -> RegisterStore:
        return RegisterStore(self.redis, self.settings)

    def start_worker(self, name: str = "logic") -> Any:
        web_port = self.port()
        worker = self.launch(
            "stream_logic",
            name=name,
            env={**self.env, "IM_LOGIC_WEB_PORT": str(web_port)},
            health_url=f"http://127.0.0.1:{web_port}/healthz",
        )
        self.workers.append(worker)
        return worker

    async def send(self, message: ClientMessage) -> None:
        await self.producer.send_and_wait(
            self.settings.msg_topic, encode(message), key=message.conv_id.encode()
        )

    async def send_many(self, messages: list[ClientMessage], per_second: float = 0) -> None:
        """Publish in order; with ``per_second``, spread them out so a kill lands mid-stream."""
        pending = []
        for index, message in enumerate(messages):
            pending.append(
                await self.producer.send(
                    self.settings.msg_topic, encode(message), key=message.conv_id.encode()
                )
            )
            if per_second and index % 10 == 9:
                await asyncio.sleep(10 / per_second)
        await asyncio.gather(*pending)


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


class PushReader:
    """Reads a push topic from the start in the background, keeping every record."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
        )
        self.topic = topic
        self.records: list[PushRecord] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partition = TopicPartition(self.topic, 0)
        self.consumer.assign([partition])
        await self.consumer.seek_to_beginning(partition)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            for records in batch.values():
                self.records.extend(decode_push_record(r.value) for r in records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.consumer.stop()

    def delivered(self, conv_id: str | None = None) -> list[Any]:
        return [
            r.message
            for r in self.records
            if r.kind == "deliver"
            and r.message is not None
            and (conv_id is None or r.message.conv_id == conv_id)
        ]

    def results(self) -> list[Any]:
        return [r.result for r in self.records if r.kind == "send_result" and r.result]

    async def wait_for(self, check: Callable[[], bool], within_s: float, what: str) -> None:
        deadline = time.monotonic() + within_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.2)


async def delete_topics(settings: Settings, tag: str) -> None:
    """Drop a test deployment's topics (inputs, changelog, push queue) from the shared broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith((f"{tag}.", f"{tag}-"))]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


@pytest.fixture
async def logic(
    settings: Settings,
    stack: Any,
    launch: Any,
    port: Callable[[], int],
    unique: Callable[[str], str],
) -> AsyncIterator[Logic]:
    tag = unique("logic")
    values, logic_settings = own_deployment(settings, tag, partitions=TEST_PARTITIONS)
    connector_id = unique("test")
    await create_topic(settings, push_topic(logic_settings, connector_id), 1)
    redis = Redis.from_url(settings.redis_url)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    pool = await create_pool(settings, maxsize=2)
    register = RegisterStore(redis, logic_settings)
    await register.announce_connector(
        ConnectorInfo(connector_id, "127.0.0.1", 1, 0, 100, int(time.time() * 1000)), ttl_s=600
    )
    deployment = Logic(logic_settings, values, connector_id, launch, port, redis, producer, pool)
    try:
        yield deployment
    finally:
        for worker in deployment.workers:
            worker.stop()
        await register.withdraw_connector(connector_id)
        await producer.stop()
        await close_pool(pool)
        await redis.aclose()
        await delete_topics(settings, tag)
        shutil.rmtree(Path(tempfile.gettempdir()) / f"mmim-logic-{tag}", ignore_errors=True)


@pytest.fixture
async def push_reader(logic: Logic) -> AsyncIterator[PushReader]:
    reader = PushReader(logic.settings, push_topic(logic.settings, logic.connector_id))
    await reader.start()
    try:
        yield reader
    finally:
        await reader.stop()


async def archived(logic: Logic, conv_id: str, count: int, within_s: float = 60.0) -> list[Any]:
    """Poll MySQL until ``count`` messages of the conversation are there."""
    archive = MessageArchive(logic.mysql)
    deadline = time.monotonic() + within_s
    while True:
        rows = await archive.history(conv_id, 0, count + 10)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.5)


def stream_counts(sent: int, received_seqs: list[int], ids: list[str]) -> dict[str, int]:
    """What a client that drops duplicates by msg_id would see."""
    seen: set[str] = set()
    firsts: list[int] = []
    for msg_id, seq in zip(ids, received_seqs, strict=True):
        if msg_id not in seen:
            seen.add(msg_id)
            firsts.append(seq)
    out_of_order = sum(1 for a, b in itertools.pairwise(firsts) if b <= a)
    return {
        "sent": sent,
        "received": len(firsts),
        "duplicates": len(ids) - len(firsts),
        "out_of_order": out_of_order,
    }


async def test_delivery_send_results_dedup_offline_and_persistence(
    logic: Logic, push_reader: PushReader, unique: Callable[[str], str]
) -> None:
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    await logic.register.bind_session(bob, "phone", logic.connector_id, unique("session"))
    logic.start_worker()
    conv = direct(alice, bob)
    cid = logic.connector_id

    messages = [chat(alice, bob, f"m{i}", cid) for i in range(20)]
    await logic.send_many(messages[:10])
    # A record that is not a ClientMessage must not stop the worker.
    await logic.producer.send_and_wait(logic.settings.msg_topic, b"not json", key=conv.encode())
    await logic.send_many(messages[10:])
    await logic.send(chat(alice, bob, "m3", cid))  # the client retries a send
    await logic.send(chat(alice, carol, "to-carol", cid))  # carol has no route
    await logic.send(
        ClientMessage(  # a conversation id that does not match the users
            client_msg_id="forged",
            sender=alice,
            conv_id=direct(carol, bob),
            to=bob,
            text="x",
            received_ts=1,
            reply_connector=cid,
        )
    )

    await push_reader.wait_for(lambda: len(push_reader.results()) >= 23, 60, "23 send results")
    delivered = push_reader.delivered(conv)
    results = {(r.client_msg_id, r.conv_id): r for r in push_reader.results()}
    retry_answers = [r for r in push_reader.results() if r.client_msg_id == "m3"]

    counts = stream_counts(20, [m.seq for m in delivered], [m.msg_id for m in delivered])
    print(f"\n1:1 delivery through the logic: {counts}")
    assert counts == {"sent": 20, "received": 20, "duplicates": 0, "out_of_order": 0}
    assert [m.seq for m in delivered] == list(range(1, 21))
    assert [m.text for m in delivered] == [m.text for m in messages]
    assert all(m.msg_id == message_id(conv, m.seq) and m.sender == alice for m in delivered)
    assert all(r.recipients == [bob] for r in push_reader.records if r.kind == "deliver")
    # Send results: one per send, the retry answered with the original message.
    for i in range(20):
        result = results[(f"m{i}", conv)]
        assert (result.seq, result.msg_id, result.error_code) == (i + 1, delivered[i].msg_id, None)
    assert len(retry_answers) == 2 and {r.seq for r in retry_answers} == {4}
    forged = results[("forged", direct(carol, bob))]
    assert forged.error_code == ErrorCode.BAD_REQUEST and forged.seq is None

    # carol was offline: her message waits in her offline list, not in a push queue.
    offline = await OfflineStore(logic.redis, logic.settings).pending(carol)
    assert [(m.seq, m.text, m.sender) for m in offline] == [(1, "text of to-carol", alice)]
    assert not push_reader.delivered(direct(alice, carol))

    # Every message is archived once, and sync pages through it.
    rows = await archived(logic, conv, 20)
    assert [m.seq for m in rows] == list(range(1, 21))
    reader = HistoryReader(logic.redis, logic.mysql, logic.settings)
    page, has_more = await reader.page(conv, 15, 10)
    assert [m.seq for m in page] == [16, 17, 18, 19, 20] and has_more is False
    assert page[0] == delivered[15]


async def test_worker_killed_halfway_through_1000_messages_loses_and_repeats_nothing(
    logic: Logic, push_reader: PushReader, unique: Callable[[str], str]
) -> None:
    alice, bob = unique("alice"), unique("bob")
    await logic.register.bind_session(bob, "phone", logic.connector_id, unique("session"))
    conv = direct(alice, bob)
    total = 1000
    messages = [chat(alice, bob, f"m{i}", logic.connector_id) for i in range(total)]
    worker = logic.start_worker()

    sending = asyncio.create_task(logic.send_many(messages, per_second=250))
    await push_reader.wait_for(lambda: len(push_reader.results()) >= total // 2, 60, "half")
    worker.kill()  # SIGKILL mid-stream: no flush, no commit, no goodbye
    killed_at = len(push_reader.results())
    logic.start_worker()
    await sending

    def all_sequenced() -> bool:
        return len({r.client_msg_id for r in push_reader.results()}) >= total

    await push_reader.wait_for(all_sequenced, 90, "all send results after the restart")
    await push_reader.wait_for(lambda: len(push_reader.delivered(conv)) >= total, 30, "deliveries")

    # Identity: whatever was replayed, m{i} always got seq i+1 and the same msg_id.
    for result in push_reader.results():
        index = int(result.client_msg_id[1:])
        assert (result.seq, result.msg_id) == (index + 1, message_id(conv, index + 1))
    delivered = push_reader.delivered(conv)
    counts = stream_counts(total, [m.seq for m in delivered], [m.msg_id for m in delivered])
    print(f"\nworker killed -9 after {killed_at} send results: {counts}")
    assert counts["received"] == total and counts["out_of_order"] == 0
    assert sorted({m.seq for m in delivered}) == list(range(1, total + 1))
    by_id = {m.msg_id: m for m in delivered}
    assert all(by_id[message_id(conv, i + 1)].text == messages[i].text for i in range(total))

    rows = await archived(logic, conv, total)
    print(f"archived in MySQL: {len(rows)} rows, seqs {rows[0].seq}..{rows[-1].seq}")
    assert [m.seq for m in rows] == list(range(1, total + 1))
    assert len({m.msg_id for m in rows}) == total


async def test_two_workers_share_partitions_and_survive_losing_one(
    logic: Logic, push_reader: PushReader, unique: Callable[[str], str]
) -> None:
    """The survivor takes over the killed worker's partitions and reads them whole.

    The killed worker usually dies before its first offset commit, so the
    partitions it held have no committed offset: the case where Faust used to
    drop records around the rebalance for good (stream_logic/rebalance_safe_consumer.py).
    """
    bob = unique("bob")
    await logic.register.bind_session(bob, "phone", logic.connector_id, unique("session"))
    senders = [unique(f"alice{k}") for k in range(6)]
    per_conv = 50
    messages = [
        chat(sender, bob, f"m{i}", logic.connector_id)
        for i in range(per_conv)
        for sender in senders
    ]
    first = logic.start_worker("logic-a")
    logic.start_worker("logic-b")

    sending = asyncio.create_task(logic.send_many(messages, per_second=100))
    await push_reader.wait_for(
        lambda: len(push_reader.results()) >= len(messages) // 3, 60, "a third"
    )
    first.kill()
    await sending

    def all_sequenced() -> bool:
        keys = {(r.sender, r.client_msg_id) for r in push_reader.results()}
        return len(keys) >= len(messages)

    await push_reader.wait_for(all_sequenced, 90, "all send results after the rebalance")
    for sender in senders:
        conv = direct(sender, bob)
        await push_reader.wait_for(
            lambda conv=conv: len({m.msg_id for m in push_reader.delivered(conv)}) >= per_conv,
            30,
            f"deliveries of {conv}",
        )
        for result in push_reader.results():
            if result.sender == sender:
                assert result.seq == int(result.client_msg_id[1:]) + 1
        delivered = push_reader.delivered(conv)
        counts = stream_counts(per_conv, [m.seq for m in delivered], [m.msg_id for m in delivered])
        print(f"\n{conv} with one of two workers killed: {counts}")
        assert counts["received"] == per_conv and counts["out_of_order"] == 0
        rows = await archived(logic, conv, per_conv)
        assert [m.seq for m in rows] == list(range(1, per_conv + 1))


@contextlib.asynccontextmanager
async def kafka_pair(
    settings: Settings, tag: str
) -> AsyncIterator[tuple[AIOKafkaProducer, AIOKafkaConsumer]]:
    """A started producer and a not yet started manual consumer (group ``tag``);
    both stopped, and the ``tag`` topics deleted, afterwards."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=tag,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        yield producer, consumer
    finally:
        await consumer.stop()
        await producer.stop()
        await delete_topics(settings, tag)


async def test_seek_to_committed_rewinds_stream_partitions_without_a_committed_offset(
    settings: Settings, unique: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    """Correction 2 of stream_logic/rebalance_safe_consumer.py, on a real broker.

    Faust drops records it already took from aiokafka around a rebalance and
    seeks to the committed offsets to read them again; a partition without a
    committed offset must go back to its start, or those records are never read.
    """
    tag = unique("rewind")
    stream, changelog = f"{tag}.msg", f"{tag}-conversations-changelog"
    await create_topic(settings, stream, 2)
    await create_topic(settings, changelog, 1)
    uncommitted, committed, table = (
        TopicPartition(stream, 0),
        TopicPartition(stream, 1),
        TopicPartition(changelog, 0),
    )
    async with kafka_pair(settings, tag) as (producer, consumer):
        for tp in (uncommitted, committed, table):
            for i in range(5):
                await producer.send_and_wait(tp.topic, b"%d" % i, partition=tp.partition)
        await consumer.start()
        consumer.assign([uncommitted, committed, table])
        await consumer.commit({committed: 2})
        ends = {uncommitted: 5, committed: 5, table: 5}

        async def positions() -> dict[TopicPartition, int]:
            return {tp: await consumer.position(tp) for tp in ends}

        deadline = time.monotonic() + 30
        while await positions() != ends and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=500)
        assert await positions() == ends
        # Everything taken from aiokafka, as Faust does with a batch it then drops.

        with caplog.at_level("WARNING", logger="stream_logic.rebalance_safe_consumer"):
            offsets = await seek_to_committed_or_start(consumer, {changelog})

        assert offsets == {uncommitted: None, committed: 2, table: None}
        after = await positions()
        shown = {f"{tp.topic}[{tp.partition}]": p for tp, p in after.items()}
        print(f"\npositions after the seek (all read to 5 before it): {shown}")
        assert after == {uncommitted: 0, committed: 2, table: 5}
        assert f"{stream}[0] 5->0" in caplog.text
        again: dict[TopicPartition, list[int]] = {}
        deadline = time.monotonic() + 30
        while sum(map(len, again.values())) < 8 and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                again.setdefault(tp, []).extend(r.offset for r in records)
        assert again == {uncommitted: [0, 1, 2, 3, 4], committed: [2, 3, 4]}


async def test_a_fetch_waiting_across_a_rebalance_takes_nothing_from_paused_partitions(
    settings: Settings, unique: Callable[[str], str]
) -> None:
    """The root of the rebalance stall (correction 1), on a real broker, without the race.

    Faust's consumer thread fetches with Faust's live set of active partitions
    as the filter; aiokafka reads an empty filter as "every partition", and a
    rebalance empties the set (everything paused) while a fetch is waiting. The
    records it then takes are dropped by Faust. ActivePartitions keeps the
    filter live but never "every partition".
    """
    tag = unique("filter")
    topic = f"{tag}.msg"
    await create_topic(settings, topic, 1)
    tp = TopicPartition(topic, 0)
    async with kafka_pair(settings, tag) as (producer, consumer):
        for i in range(3):
            await producer.send_and_wait(topic, b"%d" % i)
        await consumer.start()
        consumer.assign([tp])
        fetcher = consumer._fetcher  # what Faust's consumer thread calls
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if tp in fetcher._records:  # fetched, not yet taken
                break
            await asyncio.sleep(0.05)
        assert tp in fetcher._records

        active: set[TopicPartition] = set()  # Faust's set while a rebalance pauses everything
        taken_through_view = await fetcher.fetched_records(ActivePartitions(active), timeout=0)
        taken_through_set = await fetcher.fetched_records(active, timeout=0)

        counts = {tp: len(records) for tp, records in taken_through_set.items()}
        print(f"\nempty filter: the view took {taken_through_view}, the bare set {counts}")
        assert taken_through_view == {}
        assert [r.offset for r in taken_through_set[tp]] == [0, 1, 2]
