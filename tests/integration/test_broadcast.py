"""Broadcasts and multi-device copies end to end: logic worker and two connectors as real
processes, clients speaking raw protocol frames, system messages produced to the msg
topic as the push service does.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from auth.tokens import TokenService
from config.settings import Settings
from schemas.conversations import BROADCAST, direct, group
from schemas.protocol import Frame, Op, encode, read_frame
from schemas.records import ClientMessage
from schemas.records import encode as encode_record
from store.groups import GroupStore
from store.mysql import close_pool, create_pool
from store.offline import OfflineStore, offline_key
from tests.integration.conftest import own_deployment

QUIET_S = 1.0  # how long we listen to be sure nothing more arrives


class Wire:
    """A logged-in client connection speaking protocol v1 by hand; keeps every PUSH."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.pushes: list[dict[str, Any]] = []
        self.others: list[Frame] = []
        self._next_id = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def login(cls, port: int, token: str, device: str) -> Wire:
        wire = cls(*await asyncio.open_connection("127.0.0.1", port))
        rid = wire.send(Op.LOGIN, {"token": token, "device": device})
        ack = await asyncio.wait_for(read_frame(wire.reader, 1 << 24), 10)
        assert (ack.op, ack.request_id) == (Op.LOGIN_ACK, rid), ack.body
        wire._task = asyncio.create_task(wire._read())
        return wire

    def send(self, op: int, body: dict[str, Any]) -> int:
        self._next_id += 1
        self.writer.write(encode(op, body, self._next_id))
        return self._next_id

    async def _read(self) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                frame = await read_frame(self.reader, 1 << 24)
                if frame.op == Op.PUSH:
                    self.pushes.append(frame.body)
                    self.send(Op.PUSH_ACK, {"msg_ids": [frame.body["msg_id"]]})
                else:
                    self.others.append(frame)

    def pushed(self, conv_id: str) -> list[dict[str, Any]]:
        return [body for body in self.pushes if body["conv_id"] == conv_id]

    def acks(self) -> list[Frame]:
        return [frame for frame in self.others if frame.op == Op.SEND_ACK]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def eventually(check: Callable[[], Any], what: str, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class Cluster:
    settings: Settings
    ports: dict[str, int]
    tokens: TokenService
    producer: AIOKafkaProducer
    redis: Redis
    mysql: Any
    wires: list[Wire] = field(default_factory=list)

    async def login(self, connector: str, user: str, device: str) -> Wire:
        wire = await Wire.login(self.ports[connector], self.tokens.issue(user).token, device)
        self.wires.append(wire)
        return wire

    async def publish(self, message: ClientMessage) -> None:
        await self.producer.send_and_wait(
            self.settings.msg_topic, encode_record(message), key=message.conv_id.encode()
        )


@pytest.fixture
async def cluster(
    settings: Settings,
    launch: Any,
    port: Callable[[], int],
    unique: Callable[[str], str],
) -> AsyncIterator[Cluster]:
    tag = unique("bcast")
    env, ours = own_deployment(settings, tag, partitions=2)
    web_port = port()
    launch(
        "stream_logic",
        name="logic",
        env={**env, "IM_LOGIC_WEB_PORT": str(web_port)},
        health_url=f"http://127.0.0.1:{web_port}/healthz",
    )
    ports = {}
    for name in ("c1", "c2"):
        tcp_port, http_port = port(), port()
        launch(
            "connector",
            name=f"{tag}-{name}",
            env={
                **env,
                "IM_CONNECTOR_ID": f"{tag}-{name}",
                "IM_CONNECTOR_PORT": str(tcp_port),
                "IM_CONNECTOR_HTTP_PORT": str(http_port),
            },
            health_url=f"http://127.0.0.1:{http_port}/healthz",
        )
        ports[name] = tcp_port
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    redis = Redis.from_url(settings.redis_url)
    pool = await create_pool(settings, maxsize=2)
    running = Cluster(ours, ports, TokenService(ours, None), producer, redis, pool)
    try:
        yield running
    finally:
        for wire in running.wires:
            await wire.close()
        await producer.stop()
        await close_pool(pool)
        await redis.aclose()
        launch.stop_all()
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        topics = [t for t in await admin.list_topics() if t.startswith((f"{tag}.", f"{tag}-"))]
        if topics:
            await admin.delete_topics(topics)
        await admin.close()
        shutil.rmtree(Path(tempfile.gettempdir()) / f"mmim-logic-{tag}", ignore_errors=True)


def broadcast(push_id: str, text: str) -> ClientMessage:
    """What the push service publishes for POST broadcast (push/publisher.py)."""
    return ClientMessage(
        client_msg_id=push_id,
        sender="system",
        conv_id=BROADCAST,
        kind="system",
        text=text,
        data={"type": "notice"},
        received_ts=int(time.time() * 1000),
    )


async def test_a_broadcast_reaches_every_online_session_once_and_nobody_later(
    cluster: Cluster, unique: Callable[[str], str]
) -> None:
    ann, ben, late = unique("ann"), unique("ben"), unique("late")
    ann_phone = await cluster.login("c1", ann, "phone")
    ann_laptop = await cluster.login("c2", ann, "laptop")
    ben_phone = await cluster.login("c2", ben, "phone")
    online = [ann_phone, ann_laptop, ben_phone]

    await cluster.publish(broadcast(unique("p"), "maintenance at noon"))
    await eventually(lambda: all(w.pushed(BROADCAST) for w in online), "the broadcast")
    await asyncio.sleep(QUIET_S)
    for wire in online:
        (push,) = wire.pushed(BROADCAST)
        assert (push["kind"], push["from"], push["text"]) == (
            "system",
            "system",
            "maintenance at noon",
        )
    print(f"\nbroadcast: {[len(w.pushed(BROADCAST)) for w in online]} pushes on 3 sessions")

    # Nobody online then, nothing later: broadcasts are not kept for offline users.
    offline = OfflineStore(cluster.redis, cluster.settings)
    assert await offline.count(late) == 0
    late_wire = await cluster.login("c1", late, "phone")
    await asyncio.sleep(QUIET_S)
    assert late_wire.pushed(BROADCAST) == []


async def test_the_senders_other_devices_get_a_copy_and_the_sending_device_only_its_ack(
    cluster: Cluster, unique: Callable[[str], str]
) -> None:
    ann, ben = unique("ann"), unique("ben")
    groups = GroupStore(cluster.mysql, cluster.redis)
    team = await groups.create("pair", ann)
    await groups.add_members(team.group_id, [ben])
    try:
        phone = await cluster.login("c1", ann, "phone")
        laptop = await cluster.login("c2", ann, "laptop")
        tablet = await cluster.login("c1", ann, "tablet")
        ben_phone = await cluster.login("c2", ben, "phone")

        phone.send(Op.SEND, {"client_msg_id": "d1", "to": ben, "text": "hi ben"})
        phone.send(Op.SEND, {"client_msg_id": "g1", "group_id": team.group_id, "text": "hi all"})
        convs = [direct(ann, ben), group(team.group_id)]
        await eventually(lambda: len(phone.acks()) == 2, "both send acks")
        for wire in (laptop, tablet, ben_phone):
            await eventually(lambda w=wire: all(w.pushed(c) for c in convs), f"pushes on {wire}")
        await asyncio.sleep(QUIET_S)

        assert phone.pushes == []  # the sending device has its SEND_ACKs, no echo
        for wire in (laptop, tablet, ben_phone):
            assert [len(wire.pushed(c)) for c in convs] == [1, 1]
        assert laptop.pushed(convs[0])[0]["text"] == "hi ben"
        assert tablet.pushed(convs[1])[0]["group_id"] == team.group_id
        assert ben_phone.pushed(convs[1])[0]["from"] == ann

        # The copies were acked by the other devices: nothing waits for ann or ben.
        offline = OfflineStore(cluster.redis, cluster.settings)

        async def drained() -> bool:
            return await offline.count(ann) == 0 and await offline.count(ben) == 0

        await eventually(drained, "acked copies to leave the offline lists")
    finally:
        async with cluster.mysql.acquire() as conn, conn.cursor() as cur:
            await cur.execute("DELETE FROM chat_groups WHERE group_id = %s", (team.group_id,))
        await groups.invalidate(team.group_id)
        await cluster.redis.delete(offline_key(ann), offline_key(ben))
