"""Group sends and group sync at a real connector, spoken to over raw TCP frames.

Members' sends land on the msg topic (a topic of this test's own) in the group's
conversation, as the session's user; anyone else gets ERROR 3000 and nothing is
published. Leaving through the dispatcher takes effect at the connector at once
(the cached member set is invalidated).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

from auth.tokens import TokenService
from config.settings import Settings
from schemas.conversations import group
from schemas.errors import ErrorCode
from schemas.protocol import Frame, Op, encode, read_frame
from schemas.records import ClientMessage, decode_client_message
from store.groups import GroupStore
from store.mysql import close_pool, create_pool

RECV_TIMEOUT_S = 10.0


class Wire:
    """One TCP connection speaking protocol v1 by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.last_id = 0

    def send(self, op: int, body: dict[str, Any] | None = None) -> int:
        self.last_id += 1
        self.writer.write(encode(op, body or {}, self.last_id))
        return self.last_id

    async def recv_op(self, op: int, within_s: float = RECV_TIMEOUT_S) -> Frame:
        """The next frame with ``op``, skipping others."""
        async with asyncio.timeout(within_s):
            while True:
                frame = await read_frame(self.reader, 16 * 1024 * 1024)
                if frame.op == op:
                    return frame

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def wires() -> AsyncIterator[list[Wire]]:
    opened: list[Wire] = []
    yield opened
    for wire in opened:
        await wire.close()


@pytest.fixture
async def groups(settings: Settings) -> AsyncIterator[GroupStore]:
    redis = Redis.from_url(settings.redis_url)
    pool = await create_pool(settings, maxsize=2)
    yield GroupStore(pool, redis)
    await close_pool(pool)
    await redis.aclose()


@pytest.fixture
async def msg_topic(settings: Settings, unique: Callable[[str], str]) -> str:
    name = unique("test.groups.msg")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1)])
    finally:
        await admin.close()
    return name


async def read_topic(
    settings: Settings, name: str, count: int, within_s: float
) -> list[tuple[bytes, ClientMessage]]:
    """The first ``count`` records of the topic, or all there are after ``within_s``."""
    consumer = AIOKafkaConsumer(
        name,
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: list[tuple[bytes, ClientMessage]] = []
    try:
        deadline = time.monotonic() + within_s
        while len(found) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                found += [(r.key, decode_client_message(r.value)) for r in records]
    finally:
        await consumer.stop()
    return found


async def test_only_members_send_to_and_sync_a_group(
    launch,  # type: ignore[no-untyped-def]
    port: Callable[[], int],
    settings: Settings,
    groups: GroupStore,
    msg_topic: str,
    wires: list[Wire],
    unique: Callable[[str], str],
) -> None:
    connector_id, tcp_port, http_port, api_port = unique("conn"), port(), port(), port()
    env = {"IM_MSG_TOPIC": msg_topic}
    launch(
        "connector",
        name=connector_id,
        env={
            **env,
            "IM_CONNECTOR_ID": connector_id,
            "IM_CONNECTOR_PORT": str(tcp_port),
            "IM_CONNECTOR_HTTP_PORT": str(http_port),
        },
        health_url=f"http://127.0.0.1:{http_port}/healthz",
    )
    api = f"http://127.0.0.1:{api_port}"
    launch(
        "dispatcher",
        name="dispatcher",
        env={**env, "IM_DISPATCHER_PORT": str(api_port)},
        health_url=f"{api}/healthz",
    )

    tokens = TokenService(settings)
    admin, member, outsider = unique("ada"), unique("max"), unique("eve")
    team = await groups.create("Team", admin)
    await groups.add_members(team.group_id, [member])
    conv = group(team.group_id)

    sessions: dict[str, Wire] = {}
    for user in (admin, member, outsider):
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        wire = sessions[user] = Wire(reader, writer)
        wires.append(wire)
        wire.send(Op.LOGIN, {"token": tokens.issue(user).token, "device": "phone"})
        assert (await wire.recv_op(Op.LOGIN_ACK)).body["user"] == user

    def send(user: str, client_msg_id: str) -> int:
        body = {"client_msg_id": client_msg_id, "group_id": team.group_id, "text": client_msg_id}
        # A client cannot choose who the sender is.
        return sessions[user].send(Op.SEND, {**body, "sender": outsider, "from": outsider})

    async def refused(user: str, request_id: int, code: int) -> None:
        error = await sessions[user].recv_op(Op.ERROR)
        assert (error.request_id, error.body["code"]) == (request_id, code), error.body

    # The outsider's send is refused with the request's id; the members' go through.
    await refused(outsider, send(outsider, "eve-1"), ErrorCode.NOT_A_MEMBER)
    send(admin, "ada-1")
    send(member, "max-1")

    # Only members read the group's history.
    for user in (admin, member):
        rid = sessions[user].send(Op.SYNC, {"conv_id": conv, "after_seq": 0})
        result = await sessions[user].recv_op(Op.SYNC_RESULT)
        assert result.request_id == rid and result.body["conv_id"] == conv
    rid = sessions[outsider].send(Op.SYNC, {"conv_id": conv, "after_seq": 0})
    await refused(outsider, rid, ErrorCode.FORBIDDEN)

    # Once max leaves (through the dispatcher), the connector refuses his sends at once.
    async with httpx.AsyncClient(base_url=api, timeout=10) as http:
        left = await http.post(
            f"/v1/groups/{team.group_id}/leave",
            headers={"Authorization": f"Bearer {tokens.issue(member).token}"},
        )
    assert left.status_code == 204
    await refused(member, send(member, "max-2"), ErrorCode.NOT_A_MEMBER)
    rid = sessions[member].send(Op.SYNC, {"conv_id": conv, "after_seq": 0})
    await refused(member, rid, ErrorCode.FORBIDDEN)
    # The admin is unaffected, and a group that does not exist has no members.
    send(admin, "ada-2")
    ghost = {"client_msg_id": "ghost-1", "group_id": unique("nogroup"), "text": "anyone?"}
    await refused(admin, sessions[admin].send(Op.SEND, ghost), ErrorCode.NOT_A_MEMBER)

    found = await read_topic(settings, msg_topic, 4, within_s=10)
    sent = [(message.client_msg_id, message.sender) for _, message in found]
    # (ada-1 and max-1 came over two connections at once: either may be first.)
    assert sorted(sent[:2]) == [("ada-1", admin), ("max-1", member)]
    assert sent[2:] == [("ada-2", admin)]
    for key, message in found:
        assert key == conv.encode()
        assert (message.conv_id, message.kind, message.group_id, message.to) == (
            conv,
            "group",
            team.group_id,
            None,
        )
        assert message.sender_device == "phone"
        assert message.reply_connector == connector_id
        assert message.sender_is_member is True  # what the sequencer decides on
