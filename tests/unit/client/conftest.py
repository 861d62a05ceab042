"""An in-process test double of OUR connector (and dispatcher) for the SDK's unit tests.

It speaks wire protocol v1 over real TCP on loopback, with just enough
behaviour (sequencing per conversation, dedup by client_msg_id, offline list
until PUSH_ACK, SYNC, group sends to members, system messages for friend
requests) to exercise the client; the dispatcher double answers the users,
tokens, connector, groups and friends calls. It is not a stand-in for Kafka,
Redis or MySQL: the real pipeline is tested in tests/integration.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from client.sdk import Client
from schemas import conversations
from schemas.errors import ErrorCode
from schemas.protocol import Frame, Op, encode, encode_error, read_frame

GOOD_TOKENS = {"token-alice": "alice", "token-bob": "bob", "token-carol": "carol"}
PASSWORDS = {"alice": "pw-alice", "bob": "pw-bob", "carol": "pw-carol"}


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
    groups: dict[str, dict[str, str]] = field(default_factory=dict)  # group → user → role
    group_info: dict[str, dict[str, str]] = field(default_factory=dict)  # group → name, owner
    friend_requests: set[tuple[str, str]] = field(default_factory=set)  # (asker, asked)
    friendships: set[frozenset[str]] = field(default_factory=set)

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

    def _append(self, conv_id: str, **fields: Any) -> dict[str, Any]:
        seq = len(self.history[conv_id]) + 1
        message = {
            "msg_id": conversations.message_id(conv_id, seq),
            "conv_id": conv_id,
            "seq": seq,
            "to": None,
            "group_id": None,
            "data": None,
            "ts": int(time.time() * 1000),
            **fields,
        }
        self.history[conv_id].append(message)
        return message

    def store_group(
        self, sender: str, group_id: str, text: str, client_msg_id: str
    ) -> dict[str, Any]:
        """Sequence a group message and push it to every member but the sender."""
        message = self._append(
            conversations.group(group_id),
            **{"from": sender, "group_id": group_id, "kind": "group", "text": text},
            client_msg_id=client_msg_id,
        )
        for member in self.groups[group_id]:
            if member != sender:
                self.route(member, message)
        return message

    def system_message(self, user: str, text: str, data: dict[str, Any]) -> dict[str, Any]:
        """A system message in ``s:<user>`` (as the push service makes them), routed."""
        message = self._append(
            conversations.system(user),
            **{"from": "system", "to": user, "kind": "system", "text": text, "data": data},
            client_msg_id=f"p-{len(self.history[conversations.system(user)]) + 1}",
        )
        self.route(user, message)
        return message

    def broadcast(self, text: str) -> dict[str, Any]:
        """A broadcast: pushed to whoever is connected now, kept for nobody."""
        message = self._append(
            conversations.BROADCAST,
            **{"from": "system", "kind": "system", "text": text, "data": {"type": "notice"}},
            client_msg_id=f"b-{len(self.history[conversations.BROADCAST]) + 1}",
        )
        for session in list(self.sessions.values()):
            session.writer.write(encode(Op.PUSH, message))
        return message

    def may_sync(self, user: str, conv_id: str) -> bool:
        if conv_id.startswith("g:"):
            return user in self.groups.get(conv_id[2:], {})
        return user in (conversations.members_of_direct(conv_id) or ()) or (
            conv_id == conversations.system(user)
        )

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
        if body.get("group_id") is not None:
            self._send_group(user, writer, rid, body)
            return
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

    def _send_group(
        self, user: str, writer: asyncio.StreamWriter, rid: int, body: dict[str, Any]
    ) -> None:
        backend, group_id, cmid = self.backend, body["group_id"], body["client_msg_id"]
        if user not in backend.groups.get(group_id, {}):
            message = f"not a member of group {group_id}"
            writer.write(encode_error(ErrorCode.NOT_A_MEMBER, message, rid))
            return
        ack = backend.acks_by_client_id.get((user, cmid))
        if ack is None:
            message = backend.store_group(user, group_id, body["text"], cmid)
            ack = {k: message[k] for k in ("client_msg_id", "msg_id", "conv_id", "seq", "ts")}
            backend.acks_by_client_id[(user, cmid)] = ack
        writer.write(encode(Op.SEND_ACK, ack, rid))

    def _sync(
        self, user: str, writer: asyncio.StreamWriter, rid: int, body: dict[str, Any]
    ) -> None:
        conv_id = body["conv_id"]
        if not self.backend.may_sync(user, conv_id):
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
        self.backend = connectors[0].backend
        self.lookups: list[dict[str, str]] = []
        self.passwords = dict(PASSWORDS)
        self.unavailable = False  # answer 503 to every connector lookup
        self.calls: list[tuple[str, str, str | None]] = []  # (method, path, caller)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith(("/v1/groups", "/v1/friends")):
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
            caller = GOOD_TOKENS.get(bearer)
            self.calls.append((request.method, path, caller))
            if caller is None:
                return _error(401, ErrorCode.BAD_TOKEN, "bad token")
            body = httpx.Response(200, content=request.content).json() if request.content else {}
            if path.startswith("/v1/groups"):
                return self._groups(request.method, path, caller, body)
            return self._friends(request.method, path, caller, body)
        return self._accounts(request)

    def _groups(self, method: str, path: str, caller: str, body: dict[str, Any]) -> httpx.Response:
        groups, info = self.backend.groups, self.backend.group_info
        if (method, path) == ("POST", "/v1/groups"):
            group_id = f"g{len(groups) + 1}"
            groups[group_id] = {caller: "admin"}
            info[group_id] = {"name": body["name"], "owner": caller}
            return httpx.Response(201, json={"group_id": group_id, **info[group_id]})
        if (method, path) == ("GET", "/v1/groups"):
            mine = [
                {"group_id": g, **info[g], "role": members[caller]}
                for g, members in groups.items()
                if caller in members
            ]
            return httpx.Response(200, json={"groups": mine})
        match = re.fullmatch(r"/v1/groups/([^/]+)/(members|leave)(?:/([^/]+))?", path)
        if match is None:
            return _error(404, ErrorCode.NOT_FOUND, "not found")
        group_id, what, target = match.groups()
        if group_id not in groups:
            return _error(404, ErrorCode.NOT_FOUND, f"no such group: {group_id}")
        members = groups[group_id]
        if caller not in members:
            message = f"you are not a member of group {group_id!r}"
            return _error(403, ErrorCode.NOT_A_MEMBER, message)
        if method == "GET":
            listed = [{"user_id": u, "role": r} for u, r in members.items()]
            return httpx.Response(200, json={"group_id": group_id, "members": listed})
        if what == "leave" or target == caller:
            if info[group_id]["owner"] == caller:
                return _error(403, ErrorCode.FORBIDDEN, "the owner cannot leave the group")
            del members[caller]
            return httpx.Response(204)
        if members[caller] != "admin":
            message = f"only admins of group {group_id!r} manage its members"
            return _error(403, ErrorCode.FORBIDDEN, message)
        if method == "DELETE":
            members.pop(target, None)
            return httpx.Response(204)
        unknown = [u for u in body["user_ids"] if u not in self.passwords]
        if unknown:
            return _error(404, ErrorCode.NOT_FOUND, f"no such users: {', '.join(unknown)}")
        new = [u for u in dict.fromkeys(body["user_ids"]) if u not in members]
        members.update(dict.fromkeys(new, "member"))
        return httpx.Response(200, json={"added": len(new)})

    def _friends(self, method: str, path: str, caller: str, body: dict[str, Any]) -> httpx.Response:
        backend = self.backend
        if (method, path) == ("GET", "/v1/friends"):
            friends = sorted(u for pair in backend.friendships if caller in pair for u in pair)
            return httpx.Response(
                200,
                json={
                    "friends": [u for u in friends if u != caller],
                    "incoming": sorted(a for a, b in backend.friend_requests if b == caller),
                    "outgoing": sorted(b for a, b in backend.friend_requests if a == caller),
                },
            )
        if (method, path) == ("POST", "/v1/friends/requests"):
            peer = body["user_id"]
            if peer not in self.passwords:
                return _error(404, ErrorCode.NOT_FOUND, f"no such user: {peer}")
            if (peer, caller) in backend.friend_requests:
                return self._accept(caller, peer)
            backend.friend_requests.add((caller, peer))
            data = {"type": "friend_request", "from": caller}
            backend.system_message(peer, f"{caller} wants to be your friend", data)
            return httpx.Response(202, json={"user_id": peer, "status": "pending"})
        match = re.fullmatch(r"/v1/friends/requests/([^/]+)/(accept|reject)", path)
        if match is not None:
            peer, answer = match.groups()
            if (peer, caller) not in backend.friend_requests:
                return _error(404, ErrorCode.NOT_FOUND, f"no friend request from {peer}")
            if answer == "accept":
                return self._accept(caller, peer)
            backend.friend_requests.discard((peer, caller))
            return httpx.Response(204)
        match = re.fullmatch(r"/v1/friends/([^/]+)", path)
        if method == "DELETE" and match is not None:
            pair = frozenset((caller, match.group(1)))
            if pair not in backend.friendships:
                return _error(404, ErrorCode.NOT_FOUND, "not friends")
            backend.friendships.discard(pair)
            return httpx.Response(204)
        return _error(404, ErrorCode.NOT_FOUND, "not found")

    def _accept(self, caller: str, peer: str) -> httpx.Response:
        backend = self.backend
        backend.friend_requests.discard((peer, caller))
        backend.friendships.add(frozenset((caller, peer)))
        data = {"type": "friend_accepted", "from": caller}
        backend.system_message(peer, f"{caller} accepted your friend request", data)
        return httpx.Response(200, json={"user_id": peer, "status": "accepted"})

    def _accounts(self, request: httpx.Request) -> httpx.Response:
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


def _error(status: int, code: ErrorCode, message: str) -> httpx.Response:
    return httpx.Response(status, json={"code": int(code), "message": message})


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


@pytest.fixture
async def make_client(http_for: Callable[[], httpx.AsyncClient]) -> AsyncIterator[Any]:
    """``make_client(user, **options)``: SDK clients on the doubles, closed at the end."""
    made: list[tuple[Client, httpx.AsyncClient]] = []

    def make(user: str, **options: Any) -> Client:
        http = http_for()
        options.setdefault("password", PASSWORDS.get(user))
        client = Client(user, dispatcher_url="http://dispatcher.test", http=http, **options)
        made.append((client, http))
        return client

    yield make
    for client, http in made:
        with contextlib.suppress(Exception):
            await client.close()
        await http.aclose()
