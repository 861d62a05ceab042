"""The SDK's groups, friends and system messages, against the doubles in conftest."""

from __future__ import annotations

import asyncio

import pytest

from client.errors import RequestRefused, ServerError
from client.messages import Message
from client.sdk import Client
from schemas.errors import ErrorCode
from schemas.protocol import Op


async def receive_n(client: Client, count: int, within_s: float = 5.0) -> list[Message]:
    async with asyncio.timeout(within_s):
        return [await client.receive() for _ in range(count)]


async def nothing_more(client: Client, within_s: float = 0.3) -> bool:
    try:
        async with asyncio.timeout(within_s):
            await client.receive()
    except TimeoutError:
        return True
    return False


async def test_a_group_is_created_filled_and_listed(make_client) -> None:
    alice = make_client("alice")
    group = await alice.create_group("climbing")
    added = await alice.add_members(group.group_id, ["bob", "carol", "bob"])
    members = await make_client("bob").group_members(group.group_id)

    assert (group.name, group.owner) == ("climbing", "alice")
    assert added == 2
    assert {(m.user_id, m.role) for m in members} == {
        ("alice", "admin"),
        ("bob", "member"),
        ("carol", "member"),
    }
    [mine] = await make_client("carol").my_groups()
    assert (mine.group_id, mine.role) == (group.group_id, "member")


async def test_group_refusals_carry_the_servers_code_and_message(make_client) -> None:
    alice, bob, carol = make_client("alice"), make_client("bob"), make_client("carol")
    group = await alice.create_group("g")
    await alice.add_members(group.group_id, ["bob"])

    with pytest.raises(RequestRefused) as not_admin:
        await bob.add_members(group.group_id, ["carol"])
    with pytest.raises(RequestRefused) as not_member:
        await carol.group_members(group.group_id)
    with pytest.raises(RequestRefused) as no_group:
        await alice.group_members("nope")
    with pytest.raises(RequestRefused) as owner_leaves:
        await alice.leave_group(group.group_id)

    assert (not_admin.value.status, not_admin.value.code) == (403, ErrorCode.FORBIDDEN)
    assert "only admins" in not_admin.value.message
    assert (not_member.value.status, not_member.value.code) == (403, ErrorCode.NOT_A_MEMBER)
    assert str(not_member.value).startswith("NOT_A_MEMBER (3000): you are not a member")
    assert no_group.value.status == 404
    assert owner_leaves.value.code == ErrorCode.FORBIDDEN


async def test_leaving_and_removing_members(make_client, backend) -> None:
    alice = make_client("alice")
    group = await alice.create_group("g")
    await alice.add_members(group.group_id, ["bob", "carol"])

    await make_client("bob").leave_group(group.group_id)
    await alice.remove_member(group.group_id, "carol")

    assert [m.user_id for m in await alice.group_members(group.group_id)] == ["alice"]


async def test_group_messages_reach_every_other_member_in_seq_order(make_client, backend) -> None:
    alice = make_client("alice")
    group = await alice.create_group("g")
    await alice.add_members(group.group_id, ["bob", "carol"])
    bob = make_client("bob")
    await bob.connect()
    await alice.connect()

    acks = [await alice.send_to_group(group.group_id, f"hi {n}") for n in (1, 2, 3)]
    live = await receive_n(bob, 3)
    carol = make_client("carol")  # offline until now
    await carol.connect()
    later = await receive_n(carol, 3)

    assert [a.conv_id for a in acks] == [f"g:{group.group_id}"] * 3
    assert [a.seq for a in acks] == [1, 2, 3]
    for got in (live, later):
        assert [m.msg_id for m in got] == [a.msg_id for a in acks]
        assert {(m.sender, m.group_id, m.kind, m.to) for m in got} == {
            ("alice", group.group_id, "group", None)
        }
    assert await nothing_more(alice)  # the sender has its acks, not pushes


async def test_a_non_member_group_send_is_refused_with_not_a_member(make_client) -> None:
    alice = make_client("alice")
    group = await alice.create_group("g")
    carol = make_client("carol")
    await carol.connect()

    with pytest.raises(ServerError) as caught:
        await carol.send_to_group(group.group_id, "let me in", timeout=5)

    assert caught.value.code == ErrorCode.NOT_A_MEMBER
    assert str(caught.value) == f"NOT_A_MEMBER (3000): not a member of group {group.group_id}"


async def test_friend_request_and_acceptance_arrive_as_system_messages(make_client) -> None:
    alice, bob = make_client("alice"), make_client("bob")
    await alice.connect()

    asked = await alice.friend_request("bob")  # bob is offline
    await bob.connect()
    [request] = await receive_n(bob, 1)
    incoming = (await bob.friend_list()).incoming
    accepted = await bob.friend_accept("alice")
    [answer] = await receive_n(alice, 1)

    assert (asked.user_id, asked.status) == ("bob", "pending")
    assert incoming == ["alice"]
    assert (request.kind, request.sender, request.conv_id) == ("system", "system", "s:bob")
    assert request.is_system and request.data == {"type": "friend_request", "from": "alice"}
    assert request.to_json()["data"] == {"type": "friend_request", "from": "alice"}
    assert accepted.status == "accepted"
    assert answer.data_type == "friend_accepted" and answer.data["from"] == "bob"
    assert (await alice.friend_list()).friends == ["bob"]


async def test_rejecting_and_removing_friends(make_client) -> None:
    alice, bob, carol = make_client("alice"), make_client("bob"), make_client("carol")
    await alice.friend_request("bob")
    await carol.friend_request("bob")
    await bob.friend_reject("alice")
    await bob.friend_accept("carol")
    await carol.friend_remove("bob")

    listed = await bob.friend_list()
    assert (listed.friends, listed.incoming, listed.outgoing) == ([], [], [])
    with pytest.raises(RequestRefused) as caught:
        await bob.friend_accept("alice")
    assert caught.value.status == 404


async def test_a_stale_token_is_replaced_once_for_dispatcher_calls(make_client, dispatcher) -> None:
    alice = make_client("alice", token="stale")
    group = await alice.create_group("g")
    assert group.owner == "alice"
    callers = [caller for _, _, caller in dispatcher.calls]
    assert callers == [None, "alice"]


async def test_broadcasts_are_delivered_without_trying_to_sync_them(make_client, backend) -> None:
    bob = make_client("bob")
    await bob.connect()
    backend.broadcast("maintenance at noon")
    backend.history["broadcast"].append({})  # a broadcast bob missed (seq 2)
    backend.broadcast("maintenance done")  # seq 3: not a gap to fill

    got = await receive_n(bob, 2)

    assert [(m.conv_id, m.seq) for m in got] == [("broadcast", 1), ("broadcast", 3)]
    assert got[0].data == {"type": "notice"}
    assert backend.frames("bob", Op.SYNC) == []


async def test_a_resync_skips_a_conversation_we_left_and_syncs_the_others(
    make_client, backend, connectors, dispatcher
) -> None:
    alice = make_client("alice")
    group = await alice.create_group("g")
    await alice.add_members(group.group_id, ["bob"])
    bob = make_client("bob", ack_delay_s=0.01)
    await bob.connect()
    await alice.connect()
    await alice.send_to_group(group.group_id, "in the group")
    await alice.send("bob", "direct 1")
    assert len(await receive_n(bob, 2)) == 2
    await bob.leave_group(group.group_id)

    # Bob's connection dies; a message sent meanwhile is neither pushed nor
    # kept offline (as when a connector crashes): only a SYNC finds it.
    dispatcher.unavailable = True
    backend.lose_pushes_to.add("bob")
    connectors[0].drop("bob")
    await alice.send("bob", "direct 2")
    backend.lose_pushes_to.discard("bob")
    dispatcher.unavailable = False

    [missed] = await receive_n(bob, 1)
    assert (missed.text, missed.seq) == ("direct 2", 2)
    synced = [f.body["conv_id"] for f in backend.frames("bob", Op.SYNC)]
    assert synced[:2] == [f"g:{group.group_id}", "p:alice:bob"]
