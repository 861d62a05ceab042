"""An in-process test double of OUR connector (and dispatcher) for the SDK's unit tests.

It speaks wire protocol v1 over real TCP on loopback, with just enough
behaviour (sequencing per conversation, dedup by client_msg_id, offline list
until PUSH_ACK, SYNC) to exercise the client. It is not a stand-in for Kafka,
Redis or MySQL: the real pipeline is tested in tests/integration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from schemas import conversations
from schemas.errors import ErrorCode
from schemas.protocol import Frame, Op, encode, encode_error, read_frame

GOOD_TOKENS = {"token-alice": "alice", "token-bob": "bob", "token-carol": "carol"}


@dataclass
class Session:
    user: str
    connector: FakeConnector
    writer: asyncio.StreamWriter


@dataclass
class FakeBackend:
    """State shared by the fake connectors: history, offline lists, who is where."""

    history: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    offline: dict[str, OrderedDict[str, dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(OrderedDict)
    )
    sessions: dict[str, Session] = field(default_factory=dict)
    acks_by_client_id: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    received: list[tuple[str, Frame]] = field(default_factory=list)  # (user, frame)
    push_acked: list[str] = field(default_factory=list)
    drop_send_acks: int = 0  # swallow this many SEND_ACKs (as if lost)
    lose_pushes_to: set[str] = field(default_factory=set)  # neither pushed nor offline
    sync_page_size: int = 100

    def frames(self, user: str, op: Op) -> list[Frame]:
        return [frame for who, frame in self.received if who == user and frame.op == op]

    def store(self, sender: str, to: str, text: str, client_msg_id: str) -> dict[str, Any]:
        conv_id = conversations.direct(sender, to)
        seq = len(self.history[conv_id]) + 1
        message = {
            "msg_id": conversations.message_id(conv_id, seq),
            "conv_id": conv_id,
            "seq": seq,
            "from": sender,
            "to": to,
            "group_id": None,
            "kind": "chat",
            "text": text,
            "ts": int(time.time() * 1000),
            "client_msg_id": client_msg_id,
        }
        self.history[conv_id].append(message)
        return message

    def route(self, user: str, message: dict[str, Any]) -> None:
        """Push to the user's session, or keep in the offline list."""
        if user in self.lose_pushes_to:
            return
        session = self.sessions.get(user)
        if session is None or session.writer.is_closing():
            self.offline[user][message["msg_id"]] = message
        else:
            session.writer.write(encode(Op.PUSH, message))


class FakeConnector:
    """One connector: a TCP server speaking v1 for the tests."""

    def __init__(self, backend: FakeBackend, connector_id: str) -> None:
        self.backend = backend
        self.connector_id = connector_id
        self.server: asyncio.Server | None = None
        self.port = 0
        self.logins: list[str] = []
        self.heartbeat_interval_s = 20.0
        self.heartbeat_timeout_s = 60.0

    async def start(self) -> FakeConnector:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for user, session in list(self.backend.sessions.items()):
                if session.connector is self:
                    session.writer.transport.abort()
                    self.backend.sessions.pop(user, None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    def drop(self, user: str) -> None:
        """Cut a user's connection without a word, as a crashing connector would."""
        session = self.backend.sessions.pop(user)
        session.writer.transport.abort()

    def kick(self, user: str, reason: str, reconnect: bool) -> None:
        session = self.backend.sessions.pop(user)
        session.writer.write(encode(Op.KICK, {"reason": reason, "reconnect": reconnect}))
        session.writer.close()

    def push_raw(self, user: str, message: dict[str, Any]) -> None:
        self.backend.sessions[user].writer.write(encode(Op.PUSH, message))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self.backend
        user: str | None = None
        try:
            while True:
                frame = await read_frame(reader)
                backend.received.append((user or "?", frame))
                rid, body = frame.request_id, frame.body
                if frame.op == Op.LOGIN:
                    user = GOOD_TOKENS.get(body.get("token", ""))
                    if user is None:
                        writer.write(encode_error(ErrorCode.BAD_TOKEN, "bad token", rid))
                        await writer.drain()
                        return
                    backend.sessions[user] = Session(user, self, writer)
                    self.logins.append(user)
                    writer.write(
                        encode(
                            Op.LOGIN_ACK,
                            {
                                "user": user,
                                "device": body.get("device", "default"),
                                "session_id": f"s-{len(self.logins)}",
                                "connector_id": self.connector_id,
                                "heartbeat_interval_s": self.heartbeat_interval_s,
                                "heartbeat_timeout_s": self.heartbeat_timeout_s,
                                "max_frame_bytes": 65536,
                            },
                            rid,
                        )
                    )
                    for message in list(backend.offline[user].values()):
                        writer.write(encode(Op.PUSH, message))
                elif user is None:
                    writer.write(encode_error(ErrorCode.NOT_LOGGED_IN, "log in first", rid))
                elif frame.op == Op.HEARTBEAT:
                    writer.write(encode(Op.HEARTBEAT_ACK, {"server_ts": 1}, rid))
                elif frame.op == Op.SEND:
                    self._send(user, writer, rid, body)
                elif frame.op == Op.PUSH_ACK:
                    for msg_id in body.get("msg_ids", []):
                        backend.push_acked.append(msg_id)
                        backend.offline[user].pop(msg_id, None)
                elif frame.op == Op.SYNC:
                    self._sync(user, writer, rid, body)
                elif frame.op == Op.LOGOUT:
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if user is not None:
                session = backend.sessions.get(user)
                if session is not None and session.writer is writer:
                    del backend.sessions[user]
            writer.close()

    def _send(
        self, user: str, writer: asyncio.StreamWriter, rid: int, body: dict[str, Any]
    ) -> None:
        backend = self.backend
        to, cmid = body["to"], body["client_msg_id"]
        if to not in GOOD_TOKENS.values():
            writer.write(encode_error(ErrorCode.UNKNOWN_RECIPIENT, f"no user {to}", rid))
            return
        ack = backend.acks_by_client_id.get((user, cmid))
        if ack is None:
            message = backend.store(user, to, body["text"], cmid)
            ack = {k: message[k] for k in ("client_msg_id", "msg_id", "conv_id", "seq", "ts")}
            backend.acks_by_client_id[(user, cmid)] = ack
            backend.route(to, message)
        if backend.drop_send_acks > 0:
            backend.drop_send_acks -= 1
            return
        writer.write(encode(Op.SEND_ACK, ack, rid))

    def _sync(
        self, user: str, writer: asyncio.StreamWriter, rid: int, body: dict[str, Any]
    ) -> None:
        conv_id = body["conv_id"]
        if user not in (conversations.members_of_direct(conv_id) or ()):
            writer.write(encode_error(ErrorCode.FORBIDDEN, "not your conversation", rid))
            return
        limit = min(body.get("limit") or self.backend.sync_page_size, self.backend.sync_page_size)
        after = [m for m in self.backend.history[conv_id] if m["seq"] > body["after_seq"]]
        page = after[:limit]
        result = {"conv_id": conv_id, "messages": page, "has_more": len(after) > limit}
        writer.write(encode(Op.SYNC_RESULT, result, rid))


class FakeDispatcher:
    """httpx MockTransport handler standing in for our dispatcher's HTTP API."""

    def __init__(self, connectors: list[FakeConnector]) -> None:
        self.connectors = connectors
        self.lookups: list[dict[str, str]] = []
        self.passwords = {"alice": "pw-alice", "bob": "pw-bob", "carol": "pw-carol"}
        self.unavailable = False  # answer 503 to every connector lookup

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/tokens":
            data = httpx.Response(200, content=request.content).json()
            if self.passwords.get(data["user_id"]) != data["password"]:
                return httpx.Response(401, json={"code": 2003, "message": "bad credentials"})
            return httpx.Response(200, json={"token": f"token-{data['user_id']}", "expires_at": 0})
        if request.url.path == "/v1/users":
            data = httpx.Response(200, content=request.content).json()
            if data["user_id"] in self.passwords:
                return httpx.Response(409, json={"code": 2004, "message": "user exists"})
            self.passwords[data["user_id"]] = data["password"]
            return httpx.Response(201, json={"user_id": data["user_id"]})
        if request.url.path == "/v1/connector":
            exclude = set(filter(None, request.url.params.get("exclude", "").split(",")))
            self.lookups.append({"exclude": request.url.params.get("exclude", "")})
            live = [c for c in self.connectors if c.server is not None and c.server.is_serving()]
            choice = [c for c in live if c.connector_id not in exclude]
            if not choice or self.unavailable:
                return httpx.Response(
                    503, json={"code": 5000, "message": "none"}, headers={"Retry-After": "1"}
                )
            picked = choice[0]
            return httpx.Response(
                200,
                json={
                    "connector_id": picked.connector_id,
                    "host": "127.0.0.1",
                    "port": picked.port,
                    "backoff": {"initial_ms": 20, "max_ms": 200, "multiplier": 2, "jitter": 0.1},
                },
            )
        return httpx.Response(404, json={"code": 2006, "message": "not found"})


@pytest.fixture
async def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def connectors(backend: FakeBackend) -> AsyncIterator[list[FakeConnector]]:
    started = [
        await FakeConnector(backend, "c1").start(),
        await FakeConnector(backend, "c2").start(),
    ]
    yield started
    for connector in started:
        await connector.stop()


@pytest.fixture
def dispatcher(connectors: list[FakeConnector]) -> FakeDispatcher:
    return FakeDispatcher(connectors)


@pytest.fixture
def http_for(dispatcher: FakeDispatcher) -> Callable[[], httpx.AsyncClient]:
    """A fresh AsyncClient wired to the fake dispatcher (one per SDK client)."""

    def make() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(dispatcher))

    return make
