"""The SDK against an in-process double of our connector and dispatcher (see conftest)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import httpx
import pytest

from client.dispatcher_api import DispatcherApi
from client.errors import (
    AuthFailed,
    ClientClosed,
    ConnectionLost,
    LoginRateLimited,
    ServerError,
    UserExists,
)
from client.messages import Message
from client.sdk import Client
from schemas import conversations
from schemas.errors import ErrorCode
from schemas.protocol import Op


async def until(check: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll ``check`` (state of the connector double) until it holds."""
    async with asyncio.timeout(within_s):
        for _ in itertools.count():
            if check():
                return
            await asyncio.sleep(0.01)


async def receive_n(client: Client, count: int, within_s: float = 5.0) -> list[Message]:
    async with asyncio.timeout(within_s):
        return [await client.receive() for _ in range(count)]


async def test_send_returns_the_servers_ack_with_increasing_seq(make_client, backend) -> None:
    alice = make_client("alice")
    session = await alice.connect()
    assert session.user == "alice" and session.connector_id == "c1"

    first = await alice.send("bob", "hi")
    second = await alice.send("bob", "there", client_msg_id="m-2")

    assert (first.conv_id, first.seq) == ("p:alice:bob", 1)
    assert first.msg_id == conversations.message_id("p:alice:bob", 1)
    assert (second.seq, second.client_msg_id) == (2, "m-2")
    assert [m["text"] for m in backend.history["p:alice:bob"]] == ["hi", "there"]


async def test_a_lost_ack_is_retried_with_the_same_client_msg_id(make_client, backend) -> None:
    backend.drop_send_acks = 1
    alice = make_client("alice", send_retry_s=0.2)
    await alice.connect()

    ack = await alice.send("bob", "once", client_msg_id="only-once")

    sends = backend.frames("alice", Op.SEND)
    assert len(sends) == 2
    assert {f.body["client_msg_id"] for f in sends} == {"only-once"}
    assert ack.seq == 1 and len(backend.history["p:alice:bob"]) == 1


async def test_a_refused_send_raises_the_servers_error(make_client) -> None:
    alice = make_client("alice")
    await alice.connect()
    with pytest.raises(ServerError) as caught:
        await alice.send("nobody", "hello?")
    assert caught.value.code == ErrorCode.UNKNOWN_RECIPIENT


async def test_pushes_arrive_in_order_and_are_acked(make_client, backend) -> None:
    bob = make_client("bob", ack_delay_s=0.01)
    await bob.connect()
    alice = make_client("alice")
    await alice.connect()

    acks = [await alice.send("bob", f"m{n}") for n in range(1, 4)]
    got = await receive_n(bob, 3)

    assert [m.text for m in got] == ["m1", "m2", "m3"]
    assert [m.msg_id for m in got] == [a.msg_id for a in acks]
    assert got[0].sender == "alice" and got[0].to == "bob"
    await bob.close()
    assert set(backend.push_acked) >= {a.msg_id for a in acks}


async def test_duplicates_reach_the_application_once_but_are_all_acked(
    make_client, backend, connectors
) -> None:
    bob = make_client("bob", ack_delay_s=0.01)
    await bob.connect()
    message = backend.store("alice", "bob", "dup", "c-1")
    same_place = {**message, "msg_id": "other-id-same-conv-and-seq"}
    for raw in (message, message, same_place):
        connectors[0].push_raw("bob", raw)
    backend.store("alice", "bob", "next", "c-2")
    connectors[0].push_raw("bob", backend.history["p:alice:bob"][-1])

    got = await receive_n(bob, 2)
    assert [m.text for m in got] == ["dup", "next"]
    await bob.close()
    assert backend.push_acked.count(message["msg_id"]) == 2
    assert "other-id-same-conv-and-seq" in backend.push_acked


async def test_offline_messages_arrive_at_login_and_leave_the_list_when_acked(
    make_client, backend
) -> None:
    alice = make_client("alice")
    await alice.connect()
    for n in range(1, 4):
        await alice.send("bob", f"while away {n}")
    assert len(backend.offline["bob"]) == 3

    bob = make_client("bob", ack_delay_s=0.01)
    await bob.connect()
    got = await receive_n(bob, 3)
    assert [m.seq for m in got] == [1, 2, 3]
    await bob.close()
    assert not backend.offline["bob"]


async def test_a_push_that_skips_seqs_makes_the_client_fetch_the_gap_first(
    make_client, backend, connectors
) -> None:
    bob = make_client("bob")
    await bob.connect()
    first = backend.store("alice", "bob", "one", "g-1")
    backend.store("alice", "bob", "two (never pushed)", "g-2")
    third = backend.store("alice", "bob", "three", "g-3")
    connectors[0].push_raw("bob", first)
    connectors[0].push_raw("bob", third)

    got = await receive_n(bob, 3)

    assert [m.text for m in got] == ["one", "two (never pushed)", "three"]
    assert [f.body["after_seq"] for f in backend.frames("bob", Op.SYNC)] == [1]


async def test_a_gap_that_cannot_be_filled_still_delivers_what_arrived(
    make_client, backend, connectors
) -> None:
    bob = make_client("bob")
    await bob.connect()
    first = backend.store("alice", "bob", "one", "g-1")
    connectors[0].push_raw("bob", first)
    # seq 3 pushed, but seq 2 never made it into the history the SYNC reads.
    ghost = {**first, "seq": 3, "msg_id": "m-3", "text": "three"}
    connectors[0].push_raw("bob", ghost)

    got = await receive_n(bob, 2, within_s=10)

    assert [m.seq for m in got] == [1, 3]
    assert len(backend.frames("bob", Op.SYNC)) >= 2  # retried before giving up


async def test_a_bad_password_fails_login(make_client) -> None:
    alice = make_client("alice", password="wrong")
    with pytest.raises(AuthFailed) as caught:
        await alice.connect()
    assert caught.value.code == ErrorCode.BAD_CREDENTIALS


async def test_a_refused_token_fails_login_with_the_connectors_code(make_client) -> None:
    alice = make_client("alice", password=None, token="forged")
    with pytest.raises(AuthFailed) as caught:
        await alice.connect()
    assert caught.value.code == ErrorCode.BAD_TOKEN
    assert not alice.connected


async def test_a_stale_token_is_replaced_once_with_the_password(make_client, connectors) -> None:
    alice = make_client("alice", token="stale")
    session = await alice.connect()
    assert session.user == "alice"


async def test_register_reports_a_taken_user_id(make_client) -> None:
    await make_client("dave", password="pw").register()
    with pytest.raises(UserExists):
        await make_client("alice").register()


async def test_a_kick_without_reconnect_ends_the_client(make_client, connectors) -> None:
    bob = make_client("bob")
    await bob.connect()
    connectors[0].kick("bob", "logged_in_elsewhere", reconnect=False)

    with pytest.raises(ConnectionLost, match="logged_in_elsewhere"):
        await receive_n(bob, 1)
    assert bob.kicked == {"reason": "logged_in_elsewhere", "reconnect": False}
    with pytest.raises(ConnectionLost):
        await bob.send("alice", "still there?")


async def test_after_a_lost_connection_the_client_reconnects_elsewhere_and_syncs_the_gap(
    make_client, backend, connectors, dispatcher
) -> None:
    bob = make_client("bob", ack_delay_s=0.01)
    await bob.connect()
    alice = make_client("alice")
    await alice.connect()
    await alice.send("bob", "before")
    assert [m.text for m in await receive_n(bob, 1)] == ["before"]

    # Bob's connection dies and no connector is available for a moment; what
    # alice sends meanwhile is neither pushed nor kept offline for him (the
    # window a real connector crash leaves), only stored in the history.
    dispatcher.unavailable = True
    backend.lose_pushes_to.add("bob")
    connectors[0].drop("bob")
    await alice.send("bob", "during 1")
    await alice.send("bob", "during 2")
    backend.lose_pushes_to.discard("bob")
    dispatcher.unavailable = False

    got = await receive_n(bob, 2)
    assert [m.text for m in got] == ["during 1", "during 2"]
    assert [m.seq for m in got] == [2, 3]
    assert bob.connector_id == "c2" and bob.reconnects == 1
    assert {"exclude": "c1"} in dispatcher.lookups
    sync = backend.frames("bob", Op.SYNC)
    assert sync and sync[0].body["conv_id"] == "p:alice:bob" and sync[0].body["after_seq"] == 1

    # The new connection works both ways.
    await alice.send("bob", "after")
    assert [m.text for m in await receive_n(bob, 1)] == ["after"]
    assert (await bob.send("alice", "back")).seq == 5


async def test_a_send_during_a_reconnect_is_delivered_once_on_the_new_connection(
    make_client, backend, connectors
) -> None:
    alice = make_client("alice", send_retry_s=10.0)
    await alice.connect()
    backend.drop_send_acks = 1  # the ack of the first attempt is lost with the connection
    pending = asyncio.create_task(alice.send("bob", "through the outage", client_msg_id="x1"))
    await until(lambda: bool(backend.frames("alice", Op.SEND)))
    connectors[0].drop("alice")
    ack = await asyncio.wait_for(pending, 10)

    assert ack.seq == 1 and alice.connector_id == "c2"
    assert len(backend.history["p:alice:bob"]) == 1


async def test_history_pages_through_a_conversation(make_client, backend) -> None:
    backend.sync_page_size = 2
    for n in range(1, 6):
        backend.store("alice", "bob", f"h{n}", f"h-{n}")
    bob = make_client("bob")
    await bob.connect()

    first = await bob.sync("p:alice:bob", after_seq=0)
    everything = await bob.history("p:alice:bob", after_seq=1)

    assert [m.seq for m in first.messages] == [1, 2] and first.has_more
    assert [m.seq for m in everything] == [2, 3, 4, 5]


async def test_syncing_someone_elses_conversation_is_forbidden(make_client) -> None:
    carol = make_client("carol")
    await carol.connect()
    with pytest.raises(ServerError) as caught:
        await carol.sync("p:alice:bob", 0)
    assert caught.value.code == ErrorCode.FORBIDDEN


async def test_heartbeats_follow_the_interval(make_client, backend) -> None:
    alice = make_client("alice", heartbeat_interval_s=0.05)
    await alice.connect()
    await until(lambda: len(backend.frames("alice", Op.HEARTBEAT)) >= 2)
    assert alice.connected


async def test_close_logs_out_and_ends_iteration(make_client, backend) -> None:
    bob = make_client("bob")
    await bob.connect()
    received: list[Message] = []

    async def consume() -> None:
        async for message in bob:
            received.append(message)

    consumer = asyncio.create_task(consume())
    await bob.close()
    await asyncio.wait_for(consumer, 5)
    assert backend.frames("bob", Op.LOGOUT)
    with pytest.raises(ClientClosed):
        await bob.send("alice", "after close")


async def test_a_throttled_password_login_says_when_to_try_again() -> None:
    def throttled(request: httpx.Request) -> httpx.Response:
        body = {"code": 1009, "message": "too many failed logins for this user; retry later"}
        return httpx.Response(429, json=body, headers={"Retry-After": "42"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(throttled)) as http:
        api = DispatcherApi("http://dispatcher", http=http)
        with pytest.raises(LoginRateLimited) as caught:
            await api.issue_token("alice", "a guess")
    assert (caught.value.status, caught.value.code) == (429, ErrorCode.RATE_LIMITED)
    assert caught.value.retry_after_s == 42
    assert "too many failed logins" in caught.value.message
