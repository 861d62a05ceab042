"""IM_ARCHIVE_BACKEND=cassandra end to end: a logic worker and a connector as real processes.

alice sends over the wire; the worker persists to Cassandra (not MySQL); bob,
coming online later, syncs the conversation and the pages come from Cassandra
(the Redis recent index is kept too short to hold them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from auth.tokens import TokenService
from schemas.conversations import direct, message_id
from schemas.protocol import Frame, Op, encode, read_frame
from stack.testing import TestStack
from store.archive import open_archive
from store.messages import MessageArchive
from store.messages_cassandra import CassandraArchive
from store.mysql import close_pool, create_pool

RECV_TIMEOUT_S = 20.0


class Wire:
    """A raw protocol-v1 connection: frames by hand, as any client would send them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.next_id = 0

    @classmethod
    async def login(cls, port: int, token: str) -> Wire:
        wire = cls(*await asyncio.open_connection("127.0.0.1", port))
        wire.send(Op.LOGIN, {"token": token, "device": "phone"})
        ack = await wire.recv_op(Op.LOGIN_ACK)
        assert ack.op == Op.LOGIN_ACK, ack.body
        return wire

    def send(self, op: int, body: dict[str, Any]) -> int:
        self.next_id += 1
        self.writer.write(encode(op, body, self.next_id))
        return self.next_id

    async def recv_op(self, op: int) -> Frame:
        """The next frame with ``op`` (pushes and other frames in between are skipped)."""
        async with asyncio.timeout(RECV_TIMEOUT_S):
            while True:
                frame = await read_frame(self.reader, 16 * 1024 * 1024)
                if frame.op in (op, Op.ERROR):
                    return frame

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def deployment(
    cassandra: TestStack,
    launch: Any,
    port: Callable[[], int],
    unique: Callable[[str], str],
) -> AsyncIterator[tuple[TestStack, int]]:
    """A logic worker and a connector of their own topics, on the Cassandra archive."""
    tag = unique("cass")
    connector_id = unique("conn")
    env = {
        **cassandra.env,
        "IM_LOGIC_APP_ID": tag,
        "IM_MSG_TOPIC": f"{tag}.msg",
        "IM_PERSIST_TOPIC": f"{tag}.persist",
        "IM_PUSH_TOPIC_PREFIX": f"{tag}.push.",
        "IM_MSG_PARTITIONS": "2",
        # Only the last 3 messages of a conversation in Redis: older pages need the archive.
        "IM_RECENT_PER_CONV": "3",
    }
    web_port, tcp_port, http_port = port(), port(), port()
    launch(
        "stream_logic",
        name="logic-cassandra",
        env={**env, "IM_LOGIC_WEB_PORT": str(web_port)},
        health_url=f"http://127.0.0.1:{web_port}/healthz",
        timeout=120,
    )
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
        timeout=120,
    )
    stack = TestStack(
        mode=cassandra.mode,
        settings=cassandra.settings.model_copy(update={"recent_per_conv": 3}),
        env=env,
    )
    try:
        yield stack, tcp_port
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=cassandra.settings.kafka_bootstrap)
        await admin.start()
        try:
            ours = [t for t in await admin.list_topics() if t.startswith((f"{tag}.", f"{tag}-"))]
            if ours:
                await admin.delete_topics(ours)
        finally:
            await admin.close()


async def test_messages_are_archived_in_cassandra_and_synced_back(
    deployment: tuple[TestStack, int], unique: Callable[[str], str]
) -> None:
    stack, connector_port = deployment
    settings = stack.settings
    tokens = TokenService(settings)
    alice, bob = unique("alice"), unique("bob")
    conv = direct(alice, bob)
    texts = [f"message {i} to bob, kept in Cassandra" for i in range(12)]

    sender = await Wire.login(connector_port, tokens.issue(alice).token)
    try:
        acks = []
        for index, text in enumerate(texts):
            sender.send(Op.SEND, {"client_msg_id": f"m{index}", "to": bob, "text": text})
            acks.append(await sender.recv_op(Op.SEND_ACK))
    finally:
        await sender.close()
    assert [(a.op, a.body["seq"]) for a in acks] == [(Op.SEND_ACK, i) for i in range(1, 13)]

    # The persister writes asynchronously: wait until all twelve are in Cassandra.
    archive = await open_archive(settings, None)
    assert isinstance(archive, CassandraArchive)
    try:
        deadline = time.monotonic() + 60
        rows = await archive.history(conv, 0, 100)
        while len(rows) < len(texts) and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            rows = await archive.history(conv, 0, 100)
    finally:
        await archive.close()
    assert [(m.seq, m.msg_id, m.text, m.sender) for m in rows] == [
        (i + 1, message_id(conv, i + 1), text, alice) for i, text in enumerate(texts)
    ]
    # ... and only there: the MySQL archive never saw them.
    pool = await create_pool(settings, maxsize=1)
    try:
        assert await MessageArchive(pool).history(conv, 0, 100) == []
    finally:
        await close_pool(pool)

    # bob comes online and syncs from the start, in pages; the recent index holds
    # only seqs 10..12, so these pages are read from Cassandra by the connector.
    reader = await Wire.login(connector_port, tokens.issue(bob).token)
    try:
        reader.send(Op.SYNC, {"conv_id": conv, "after_seq": 0, "limit": 5})
        first = await reader.recv_op(Op.SYNC_RESULT)
        reader.send(Op.SYNC, {"conv_id": conv, "after_seq": 5, "limit": 100})
        rest = await reader.recv_op(Op.SYNC_RESULT)
    finally:
        await reader.close()
    assert first.op == Op.SYNC_RESULT, first.body
    assert [m["seq"] for m in first.body["messages"]] == [1, 2, 3, 4, 5]
    assert first.body["has_more"] is True
    assert [m["text"] for m in first.body["messages"]] == texts[:5]
    assert [m["seq"] for m in rest.body["messages"]] == list(range(6, 13))
    assert rest.body["has_more"] is False
    assert all(m["from"] == alice and m["to"] == bob for m in rest.body["messages"])
