"""The connector as a real process against the real stack, spoken to over raw TCP frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from auth.tokens import TokenService
from config.settings import Settings
from schemas.conversations import direct, message_id
from schemas.errors import ErrorCode
from schemas.protocol import HEADER, HEADER_LEN, Frame, Op, encode, read_frame
from schemas.records import PushRecord, SendResult, StoredMessage, decode_client_message
from schemas.records import encode as encode_record
from schemas.topics import msg_topic, push_topic
from store.offline import OfflineStore
from store.register import RegisterStore

RECV_TIMEOUT_S = 10.0


# --- a minimal raw client: bytes on the wire, nothing from client/ ----------------------


class Wire:
    """One TCP connection speaking protocol v1 by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._next_id = 0

    @classmethod
    async def open(cls, port: int) -> Wire:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, op: int, body: dict[str, Any] | None = None) -> int:
        self._next_id += 1
        self.writer.write(encode(op, body or {}, self._next_id))
        return self._next_id

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, within_s: float = RECV_TIMEOUT_S) -> Frame:
        return await asyncio.wait_for(read_frame(self.reader, 16 * 1024 * 1024), within_s)

    async def recv_op(self, op: int, within_s: float = RECV_TIMEOUT_S) -> Frame:
        """The next frame with ``op``, skipping others (e.g. pushes)."""
        deadline = time.monotonic() + within_s
        while True:
            frame = await self.recv(max(0.1, deadline - time.monotonic()))
            if frame.op == op:
                return frame

    async def login(self, token: str, device: str = "default") -> Frame:
        rid = self.send(Op.LOGIN, {"token": token, "device": device})
        frame = await self.recv()
        assert frame.request_id == rid
        return frame

    async def heartbeat_ok(self) -> bool:
        rid = self.send(Op.HEARTBEAT)
        frame = await self.recv_op(Op.HEARTBEAT_ACK)
        return frame.request_id == rid and isinstance(frame.body["server_ts"], int)

    async def closed_by_server(self, within_s: float = RECV_TIMEOUT_S) -> bool:
        """True once the server closed the connection (frames still in flight are skipped)."""
        try:
            async with asyncio.timeout(within_s):
                while await self.reader.read(65536):
                    pass
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@dataclass
class RunningConnector:
    connector_id: str
    port: int
    http_port: int
    process: Any

    def http_json(self, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
            try:
                return response.status, json.loads(body)
            except ValueError:
                return response.status, body.decode()


StartConnector = Callable[..., RunningConnector]


@pytest.fixture
def start_connector(launch: Any, port: Callable[[], int], unique: Callable[[str], str]) -> Any:
    def start(**env: str) -> RunningConnector:
        connector_id = unique("conn")
        tcp_port, http_port = port(), port()
        process = launch(
            "connector",
            name=connector_id,
            env={
                "IM_CONNECTOR_ID": connector_id,
                "IM_CONNECTOR_PORT": str(tcp_port),
                "IM_CONNECTOR_HTTP_PORT": str(http_port),
                "IM_SEND_RATE_PER_S": "2",
                "IM_SEND_BURST": "5",
                **env,
            },
            health_url=f"http://127.0.0.1:{http_port}/healthz",
        )
        return RunningConnector(connector_id, tcp_port, http_port, process)

    return start


@pytest.fixture
def register(redis: Redis, settings: Settings) -> RegisterStore:
    return RegisterStore(redis, settings)


@pytest.fixture
def offline(redis: Redis, settings: Settings) -> OfflineStore:
    return OfflineStore(redis, settings)


@pytest.fixture
def tokens(settings: Settings) -> TokenService:
    return TokenService(settings)


@pytest.fixture
async def wires() -> AsyncIterator[list[Wire]]:
    opened: list[Wire] = []
    yield opened
    for wire in opened:
        await wire.close()


async def connect(wires: list[Wire], connector: RunningConnector) -> Wire:
    wire = await Wire.open(connector.port)
    wires.append(wire)
    return wire


async def logged_in(
    wires: list[Wire], connector: RunningConnector, tokens: TokenService, user: str, device="d"
) -> Wire:
    wire = await connect(wires, connector)
    ack = await wire.login(tokens.issue(user).token, device)
    assert ack.op == Op.LOGIN_ACK, ack.body
    return wire


async def eventually(check: Callable[[], Any], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def produce(settings: Settings, topic: str, key: str, records: list[PushRecord]) -> None:
    """Put records on a push topic, as the stream logic would."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(topic, encode_record(record), key=key.encode())
    finally:
        await producer.stop()


async def partitions_of(settings: Settings, topic: str) -> set[int]:
    """The topic's partitions (the producer API is the public way to ask)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        return await producer.partitions_for(topic)
    finally:
        await producer.stop()


def stored(conv_id: str, seq: int, sender: str, to: str, text: str) -> StoredMessage:
    return StoredMessage(
        msg_id=message_id(conv_id, seq),
        conv_id=conv_id,
        seq=seq,
        sender=sender,
        to=to,
        text=text,
        ts=int(time.time() * 1000) + seq,
        client_msg_id=f"{sender}-{seq}",
    )


# --- login -------------------------------------------------------------------------------


async def test_login_with_good_bad_expired_and_revoked_tokens(
    start_connector: StartConnector,
    settings: Settings,
    register: RegisterStore,
    tokens: TokenService,
    wires: list[Wire],
    unique: Callable[[str], str],
) -> None:
    connector = start_connector()
    user = unique("alice")

    wire = await connect(wires, connector)
    ack = await wire.login(tokens.issue(user).token, "phone")
    assert ack.op == Op.LOGIN_ACK
    assert ack.body["user"] == user and ack.body["device"] == "phone"
    assert ack.body["connector_id"] == connector.connector_id
    assert ack.body["max_frame_bytes"] == settings.max_frame_bytes
    assert ack.body["heartbeat_timeout_s"] > ack.body["heartbeat_interval_s"] > 0
    routes = await register.routes(user)
    assert [(r.device, r.connector_id, r.session_id) for r in routes] == [
        ("phone", connector.connector_id, ack.body["session_id"])
    ]
    assert await wire.heartbeat_ok()
    status, health = connector.http_json("/healthz")
    assert status == 200 and health["status"] == "ok" and health["connections"] >= 1
    assert "mmim_connector_connections" in connector.http_json("/metrics")[1]

    expired = TokenService(settings, clock=lambda: time.time() - 2 * settings.token_ttl_s)
    revoked = tokens.issue(user)
    await register.revoke_token(revoked.jti, 60)
    cases = [
        ("not-a-token", ErrorCode.BAD_TOKEN),
        (expired.issue(user).token, ErrorCode.TOKEN_EXPIRED),
        (revoked.token, ErrorCode.TOKEN_REVOKED),
    ]
    for token, code in cases:
        refused = await connect(wires, connector)
        error = await refused.login(token)
        assert (error.op, error.body["code"]) == (Op.ERROR, code)
        assert await refused.closed_by_server()

    # The good session was not disturbed; logging out removes its route.
    assert await wire.heartbeat_ok()
    wire.send(Op.LOGOUT)
    assert await wire.closed_by_server()
    assert await register.routes(user) == []


async def test_second_login_of_the_same_device_kicks_the_first(
    start_connector: StartConnector,
    register: RegisterStore,
    tokens: TokenService,
    wires: list[Wire],
    unique: Callable[[str], str],
) -> None:
    here, there = start_connector(), start_connector()
    user = unique("bob")
    first = await logged_in(wires, here, tokens, user, "phone")
    laptop = await logged_in(wires, here, tokens, user, "laptop")

    second = await logged_in(wires, here, tokens, user, "phone")
    kick = await first.recv_op(Op.KICK)
    assert kick.body == {"reason": "logged_in_elsewhere", "reconnect": False}
    assert await first.closed_by_server()
    assert await second.heartbeat_ok() and await laptop.heartbeat_ok()

    # The same device logging in on another connector ends this one via its push topic.
    third = await logged_in(wires, there, tokens, user, "phone")
    kick = await second.recv_op(Op.KICK)
    assert kick.body == {"reason": "logged_in_elsewhere", "reconnect": False}
    assert await second.closed_by_server()
    assert await third.heartbeat_ok() and await laptop.heartbeat_ok()
    # The kicked sessions' disconnects did not remove the newer route.
    routes = {r.device: r.connector_id for r in await register.routes(user)}
    assert routes == {"phone": there.connector_id, "laptop": here.connector_id}


# --- bad input ---------------------------------------------------------------------------


async def test_bad_frames_get_errors_and_other_sessions_carry_on(
    start_connector: StartConnector,
    settings: Settings,
    tokens: TokenService,
    wires: list[Wire],
    unique: Callable[[str], str],
) -> None:
    connector = start_connector()
    bystander = await logged_in(wires, connector, tokens, unique("carol"))

    # Not fatal: the framing held, the connection stays usable.
    wire = await connect(wires, connector)
    rid = wire.send(Op.HEARTBEAT)
    error = await wire.recv()
    assert (error.op, error.request_id, error.body["code"]) == (Op.ERROR, rid, 1006)
    wire.send_raw(HEADER.pack(HEADER_LEN + 5, HEADER_LEN, 1, Op.LOGIN, 41) + b"{nope")
    error = await wire.recv()
    assert (error.request_id, error.body["code"]) == (41, ErrorCode.BAD_JSON)
    wire.send_raw(encode(99, {}, 42))
    error = await wire.recv()
    assert (error.request_id, error.body["code"]) == (42, ErrorCode.UNKNOWN_OP)
    assert (await wire.login(tokens.issue(unique("dan")).token)).op == Op.LOGIN_ACK
    rid = wire.send(Op.PUSH, {})
    error = await wire.recv()
    assert (error.request_id, error.body["code"]) == (rid, ErrorCode.BAD_REQUEST)
    rid = wire.send(Op.LOGIN, {"token": tokens.issue(unique("dan")).token})
    error = await wire.recv()
    assert (error.request_id, error.body["code"]) == (rid, ErrorCode.ALREADY_LOGGED_IN)
    assert await wire.heartbeat_ok()

    # Fatal: the stream can no longer be trusted, so ERROR then close.
    fatal_headers = [
        (HEADER.pack(settings.max_frame_bytes + 1, HEADER_LEN, 1, Op.SEND, 51), 51, 1002),
        (HEADER.pack(HEADER_LEN, HEADER_LEN, 7, Op.HEARTBEAT, 52), 52, 1001),
        (HEADER.pack(HEADER_LEN, 8, 1, Op.HEARTBEAT, 53), 0, 1000),
        (b"GET / HTTP/1.1\r\n", None, None),
    ]
    for raw, request_id, code in fatal_headers:
        bad = await connect(wires, connector)
        bad.send_raw(raw)
        error = await bad.recv()
        assert error.op == Op.ERROR
        if code is not None:
            assert (error.request_id, error.body["code"]) == (request_id, code)
        assert await bad.closed_by_server()
        assert await bystander.heartbeat_ok()


async def test_a_flood_of_sends_is_rate_limited(
    start_connector: StartConnector,
    tokens: TokenService,
    wires: list[Wire],
    unique: Callable[[str], str],
) -> None:
    connector = start_connector(IM_SEND_RATE_PER_S="0.5", IM_SEND_BURST="3")
    wire = await logged_in(wires, connector, tokens, unique("erin"))
    to = unique("frank")
    sent = [
        wire.send(Op.SEND, {"client_msg_id": f"m{i}", "to": to, "text": "spam"}) for i in range(6)
    ]
    limited: list[int] = []
    deadline = time.monotonic() + RECV_TIMEOUT_S
    while len(limited) < 3 and time.monotonic() < deadline:
        frame = await wire.recv()
        if frame.op == Op.ERROR and frame.body["code"] == ErrorCode.RATE_LIMITED:
            limited.append(frame.request_id)
    assert limited == sent[3:]
    assert await wire.heartbeat_ok()  # limited, not disconnected


async def test_silent_connections_are_closed(
    start_connector: StartConnector,
    register: RegisterStore,
    tokens: TokenService,
    wires: list[Wire],
    unique: Callable[[str], str],
) -> None:
    connector = start_connector(
        IM_HEARTBEAT_INTERVAL_S="0.5", IM_HEARTBEAT_TIMEOUT_S="1.5", IM_LOGIN_TIMEOUT_S="1.5"
    )
    quiet_user = unique("gina")
    quiet = await logged_in(wires, connector, tokens, quiet_user)
    lively = await logged_in(wires, connector, tokens, unique("hank"))
    slowloris = await connect(wires, connector)
    slowloris.send_raw(HEADER.pack(HEADER_LEN + 20, HEADER_LEN, 1, Op.LOGIN, 1)[:10])

    async def keep_talking() -> None:
        for _ in range(8):
            assert await lively.heartbeat_ok()
            await asyncio.sleep(0.5)

    talking = asyncio.create_task(keep_talking())
    timeout = await quiet.recv_op(Op.ERROR)
    assert timeout.body["code"] == ErrorCode.HEARTBEAT_TIMEOUT
    assert await quiet.closed_by_server()
    assert await slowloris.closed_by_server()
    await talking
    assert await lively.heartbeat_ok()
    await eventually(lambda: _no_routes(register, quiet_user))


async def _no_routes(register: RegisterStore, user: str) -> bool:
    return await register.routes(user) == []


# --- messages ----------------------------------------------------------------------------


async def test_a_send_is_published_as_the_authenticated_user(
    start_connector: StartConnector,
    settings: Settings,
    tokens: TokenService,
    wires: list[Wire],
    unique: Callable[[str], str],
) -> None:
    connector = start_connector()
    sender, to = unique("ivy"), unique("jack")
    topic = msg_topic(settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)

        wire = await logged_in(wires, connector, tokens, sender, "tablet")
        body = {"client_msg_id": unique("cm"), "to": to, "text": "hello", "client_ts": 123}
        wire.send(Op.SEND, {**body, "sender": "mallory", "from": "mallory"})

        found = None
        deadline = time.monotonic() + 20
        while found is None and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    message = decode_client_message(record.value)
                    if message.client_msg_id == body["client_msg_id"]:
                        found = (record.key, message)
        assert found is not None, "the send never reached the msg topic"
        key, message = found
        assert key == direct(sender, to).encode()
        assert message.sender == sender and message.sender_device == "tablet"
        assert message.conv_id == direct(sender, to) and message.to == to
        assert (message.text, message.client_ts, message.kind) == ("hello", 123, "chat")
        assert message.reply_connector == connector.connector_id
    finally:
        await consumer.stop()


async def test_push_queue_delivers_acks_and_keeps_unacked_messages_offline(
    start_connector: StartConnector,
    settings: Settings,
    offline: OfflineStore,
    tokens: TokenService,
    wires: list[Wire],
    unique: Callable[[str], str],
) -> None:
    connector = start_connector()
    alice, bob, carl = unique("kim"), unique("lee"), unique("max")
    conv = direct(alice, bob)
    waiting = stored(conv, 1, alice, bob, "while you were away")
    await offline.add_many([(bob, waiting)])

    bob_wire = await logged_in(wires, connector, tokens, bob)
    push = await bob_wire.recv_op(Op.PUSH)
    assert push.body["msg_id"] == waiting.msg_id and push.body["from"] == alice

    alice_wire = await logged_in(wires, connector, tokens, alice)
    rid = alice_wire.send(Op.SEND, {"client_msg_id": "a-2", "to": bob, "text": "hi bob"})
    live = stored(conv, 2, alice, bob, "hi bob")
    gone = stored(direct(alice, carl), 1, alice, carl, "carl is not here")
    result = SendResult(
        client_msg_id="a-2",
        sender=alice,
        sender_device="d",
        msg_id=live.msg_id,
        conv_id=conv,
        seq=2,
        ts=live.ts,
    )
    await produce(
        settings,
        push_topic(settings, connector.connector_id),
        bob,
        [
            PushRecord(kind="deliver", recipients=[bob], message=live),
            PushRecord(kind="deliver", recipients=[carl], message=gone),
            PushRecord(kind="send_result", recipients=[alice], result=result),
        ],
    )
    push = await bob_wire.recv_op(Op.PUSH)
    assert (push.body["seq"], push.body["text"], push.body["from"]) == (2, "hi bob", alice)
    ack = await alice_wire.recv_op(Op.SEND_ACK)
    assert ack.request_id == rid
    assert ack.body == {
        "client_msg_id": "a-2",
        "msg_id": live.msg_id,
        "conv_id": conv,
        "seq": 2,
        "ts": live.ts,
    }

    # Carl is not connected here: his message waits in his offline list.
    await eventually(lambda: _offline_ids(offline, carl, {gone.msg_id}))
    # Bob's messages stay listed until he acks them.
    assert {m.msg_id for m in await offline.pending(bob)} == {waiting.msg_id, live.msg_id}
    bob_wire.send(Op.PUSH_ACK, {"msg_ids": [waiting.msg_id, live.msg_id]})
    await eventually(lambda: _offline_ids(offline, bob, set()))


async def _offline_ids(offline: OfflineStore, user: str, expected: set[str]) -> bool:
    return {m.msg_id for m in await offline.pending(user)} == expected


async def test_sync_only_for_members(
    start_connector: StartConnector,
    tokens: TokenService,
    wires: list[Wire],
    unique: Callable[[str], str],
) -> None:
    connector = start_connector()
    user, friend = unique("ned"), unique("ola")
    wire = await logged_in(wires, connector, tokens, user)
    conv = direct(user, friend)
    rid = wire.send(Op.SYNC, {"conv_id": conv, "after_seq": 0})
    result = await wire.recv_op(Op.SYNC_RESULT)
    assert result.request_id == rid
    assert result.body == {"conv_id": conv, "messages": [], "has_more": False}
    for other in (direct(friend, unique("pia")), "s:" + friend, "g:" + unique("team")):
        rid = wire.send(Op.SYNC, {"conv_id": other, "after_seq": 0})
        error = await wire.recv_op(Op.ERROR)
        assert (error.request_id, error.body["code"]) == (rid, ErrorCode.FORBIDDEN)


# --- shutdown ----------------------------------------------------------------------------


async def test_sigterm_kicks_clients_to_reconnect_and_withdraws_the_connector(
    start_connector: StartConnector,
    register: RegisterStore,
    tokens: TokenService,
    wires: list[Wire],
    unique: Callable[[str], str],
) -> None:
    connector = start_connector()
    users = [unique("quinn"), unique("rosa")]
    clients = [await logged_in(wires, connector, tokens, user) for user in users]
    assert connector.connector_id in await register.alive_connectors([connector.connector_id])

    connector.process.signal(signal.SIGTERM)
    for client in clients:
        kick = await client.recv_op(Op.KICK)
        assert kick.body == {"reason": "draining", "reconnect": True}
        assert await client.closed_by_server()
    assert await register.alive_connectors([connector.connector_id]) == set()
    live = {info.connector_id for info in await register.live_connectors()}
    assert connector.connector_id not in live
    for user in users:
        assert await register.routes(user) == []
    assert await asyncio.to_thread(connector.process.popen.wait, 30) == 0
