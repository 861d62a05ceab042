"""The dispatcher's friends API as a real process on the real stack.

Requests and acceptances reach the other user as system messages: here they are
read back from the msg topic (a topic of this test's own, so only its messages are
there), as the stream logic would read them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from config.settings import Settings
from schemas.conversations import system
from schemas.records import ClientMessage, decode_client_message

PASSWORD = "a good password"


@dataclass
class Caller:
    user_id: str
    headers: dict[str, str]


class MsgTopic:
    """This test's msg topic, read from its start."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.seen: list[tuple[bytes, ClientMessage]] = []
        self.consumer = AIOKafkaConsumer(
            name,
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )

    async def create(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.name, 2, 1)])
        finally:
            await admin.close()
        await self.consumer.start()

    async def messages_to(self, user: str, count: int, within_s: float = 20) -> list[ClientMessage]:
        """The first ``count`` messages addressed to ``user`` (waits for them)."""
        deadline = time.monotonic() + within_s
        while True:
            mine = [m for _, m in self.seen if m.to == user]
            if len(mine) >= count or time.monotonic() > deadline:
                return mine
            batches = await self.consumer.getmany(timeout_ms=300)
            for records in batches.values():
                self.seen += [(r.key, decode_client_message(r.value)) for r in records]


@pytest.fixture
async def topic(settings: Settings, unique: Callable[[str], str]) -> AsyncIterator[MsgTopic]:
    opened = MsgTopic(settings, unique("test.friends.msg"))
    await opened.create()
    yield opened
    await opened.consumer.stop()


@pytest.fixture
async def http(
    launch, port: Callable[[], int], topic: MsgTopic
) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    http_port = port()
    url = f"http://127.0.0.1:{http_port}"
    launch(
        "dispatcher",
        name="dispatcher",
        env={"IM_DISPATCHER_PORT": str(http_port), "IM_MSG_TOPIC": topic.name},
        health_url=f"{url}/healthz",
    )
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


async def register(http: httpx.AsyncClient, user_id: str) -> Caller:
    created = await http.post("/v1/users", json={"user_id": user_id, "password": PASSWORD})
    assert created.status_code == 201, created.text
    token = await http.post("/v1/tokens", json={"user_id": user_id, "password": PASSWORD})
    return Caller(user_id, {"Authorization": f"Bearer {token.json()['token']}"})


async def friends_of(http: httpx.AsyncClient, caller: Caller) -> dict[str, list[str]]:
    response = await http.get("/v1/friends", headers=caller.headers)
    assert response.status_code == 200
    return response.json()


def is_notice(message: ClientMessage, kind: str, sender: str, recipient: str) -> bool:
    """A system message telling ``recipient`` about ``sender``, the way the logic expects it."""
    return (
        message.kind == "system"
        and message.sender == "system"
        and message.conv_id == system(recipient)
        and message.to == recipient
        and message.data == {"type": kind, "from": sender}
        and sender in message.text
        and message.reply_connector is None
    )


async def test_request_accept_and_remove(
    http: httpx.AsyncClient, topic: MsgTopic, unique: Callable[[str], str]
) -> None:
    alice, bob = await register(http, unique("alice")), await register(http, unique("bob"))

    asked = await http.post(
        "/v1/friends/requests", json={"user_id": bob.user_id}, headers=alice.headers
    )
    assert asked.status_code == 202
    assert asked.json() == {"user_id": bob.user_id, "status": "pending"}
    assert await friends_of(http, alice) == {
        "friends": [],
        "incoming": [],
        "outgoing": [bob.user_id],
    }
    assert await friends_of(http, bob) == {
        "friends": [],
        "incoming": [alice.user_id],
        "outgoing": [],
    }
    [notice] = await topic.messages_to(bob.user_id, 1)
    assert is_notice(notice, "friend_request", alice.user_id, bob.user_id)

    # Asking again changes nothing and re-sends the same notice: the logic drops the repeat.
    again = await http.post(
        "/v1/friends/requests", json={"user_id": bob.user_id}, headers=alice.headers
    )
    assert again.status_code == 202 and again.json()["status"] == "pending"
    notices = await topic.messages_to(bob.user_id, 2)
    assert [n.client_msg_id for n in notices] == [notice.client_msg_id] * 2

    accepted = await http.post(f"/v1/friends/requests/{alice.user_id}/accept", headers=bob.headers)
    assert accepted.status_code == 200
    assert accepted.json() == {"user_id": alice.user_id, "status": "accepted"}
    [thanks] = await topic.messages_to(alice.user_id, 1)
    assert is_notice(thanks, "friend_accepted", bob.user_id, alice.user_id)
    assert (await friends_of(http, alice))["friends"] == [bob.user_id]
    assert await friends_of(http, bob) == {
        "friends": [alice.user_id],
        "incoming": [],
        "outgoing": [],
    }

    # Either of them ends it, for both.
    assert (
        await http.delete(f"/v1/friends/{alice.user_id}", headers=bob.headers)
    ).status_code == 204
    assert (await friends_of(http, alice))["friends"] == []
    gone = await http.delete(f"/v1/friends/{bob.user_id}", headers=alice.headers)
    assert gone.status_code == 404 and gone.json()["code"] == 2006


async def test_reject_crossed_requests_and_refusals(
    http: httpx.AsyncClient, topic: MsgTopic, unique: Callable[[str], str]
) -> None:
    carol, dave, erin = [await register(http, unique(n)) for n in ("carol", "dave", "erin")]

    # Rejected: the request is gone, and the requester is not told.
    await http.post("/v1/friends/requests", json={"user_id": dave.user_id}, headers=carol.headers)
    rejected = await http.post(f"/v1/friends/requests/{carol.user_id}/reject", headers=dave.headers)
    assert rejected.status_code == 204
    assert await friends_of(http, carol) == {"friends": [], "incoming": [], "outgoing": []}
    assert await friends_of(http, dave) == {"friends": [], "incoming": [], "outgoing": []}
    twice = await http.post(f"/v1/friends/requests/{carol.user_id}/reject", headers=dave.headers)
    assert twice.status_code == 404 and twice.json()["code"] == 2006

    # Crossed requests: the second one accepts the first, and the first asker is told.
    await http.post("/v1/friends/requests", json={"user_id": erin.user_id}, headers=dave.headers)
    crossed = await http.post(
        "/v1/friends/requests", json={"user_id": dave.user_id}, headers=erin.headers
    )
    assert crossed.status_code == 202 and crossed.json()["status"] == "accepted"
    assert (await friends_of(http, dave))["friends"] == [erin.user_id]
    [request_notice] = await topic.messages_to(erin.user_id, 1)
    assert is_notice(request_notice, "friend_request", dave.user_id, erin.user_id)
    # dave heard of carol's request first, then of erin's acceptance.
    carols, erins = await topic.messages_to(dave.user_id, 2)
    assert is_notice(carols, "friend_request", carol.user_id, dave.user_id)
    assert is_notice(erins, "friend_accepted", erin.user_id, dave.user_id)

    # Nobody accepts a request that was never made; nobody befriends ghosts or themself.
    never = await http.post(f"/v1/friends/requests/{erin.user_id}/accept", headers=carol.headers)
    assert never.status_code == 404 and never.json()["code"] == 2006
    ghost = await http.post(
        "/v1/friends/requests", json={"user_id": unique("ghost")}, headers=carol.headers
    )
    assert ghost.status_code == 404 and ghost.json()["code"] == 2006
    myself = await http.post(
        "/v1/friends/requests", json={"user_id": carol.user_id}, headers=carol.headers
    )
    assert myself.status_code == 400 and myself.json()["code"] == 1005
    anonymous = await http.post("/v1/friends/requests", json={"user_id": dave.user_id})
    assert anonymous.status_code == 401 and anonymous.json()["code"] == 2000

    # Nothing was told to carol: her request was rejected silently, her other calls refused.
    await asyncio.sleep(0.5)
    assert await topic.messages_to(carol.user_id, 1, within_s=1) == []
