"""Routing: live connectors get push records, everyone else the offline list."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from schemas.conversations import BROADCAST, direct, group, message_id
from schemas.records import SendResult, StoredMessage
from store.register import RegisterStore, SessionRoute
from stream_logic.routing import (
    MAX_RECIPIENTS_PER_RECORD,
    ConnectorLiveness,
    Delivery,
    Reply,
    plan,
    push_key,
)


def stored(seq: int, to: str = "bob") -> StoredMessage:
    conv = direct("alice", to)
    return StoredMessage(
        msg_id=message_id(conv, seq),
        conv_id=conv,
        seq=seq,
        sender="alice",
        to=to,
        text=f"m{seq}",
        ts=1_000 + seq,
        client_msg_id=f"c{seq}",
    )


def result(seq: int) -> SendResult:
    return SendResult(
        client_msg_id=f"c{seq}", sender="alice", conv_id=direct("alice", "bob"), seq=seq
    )


def route(user: str, device: str, connector: str) -> SessionRoute:
    return SessionRoute(user, device, connector, f"{user}-{device}")


def to(message: StoredMessage, device: str = "") -> Delivery:
    return Delivery(message, [message.to] if message.to else [], device)


def group_message(seq: int, sender: str = "alice") -> StoredMessage:
    conv = group("team")
    return StoredMessage(
        msg_id=message_id(conv, seq),
        conv_id=conv,
        seq=seq,
        sender=sender,
        kind="group",
        group_id="team",
        text=f"g{seq}",
        ts=1_000 + seq,
        client_msg_id=f"g{seq}",
    )


def test_online_recipient_gets_one_record_per_connector_in_order() -> None:
    routes = {"bob": [route("bob", "phone", "c1"), route("bob", "laptop", "c2")]}
    routed = plan([to(stored(1)), to(stored(2))], [], routes, alive={"c1", "c2"})
    assert routed.offline == []
    for connector in ("c1", "c2"):
        records = routed.pushes[connector]
        assert [r.kind for r in records] == ["deliver", "deliver"]
        assert [r.message.seq for r in records] == [1, 2]
        assert records[0].recipients == ["bob"]


def test_no_route_or_dead_connector_means_offline() -> None:
    routes = {"bob": [route("bob", "phone", "gone")], "carol": []}
    routed = plan([to(stored(1)), to(stored(1, to="carol"))], [], routes, alive={"c1"})
    assert dict(routed.pushes) == {}
    assert [(user, m.seq) for user, m in routed.offline] == [("bob", 1), ("carol", 1)]


def test_send_results_go_to_the_live_reply_connector_only() -> None:
    replies = [Reply("c1", result(1)), Reply("dead", result(2)), Reply(None, result(3))]
    routed = plan([], replies, {}, alive={"c1"})
    assert list(routed.pushes) == ["c1"]
    assert routed.pushes["c1"][0].kind == "send_result"
    assert routed.pushes["c1"][0].recipients == ["alice"]
    assert routed.pushes["c1"][0].result.seq == 1


def test_group_message_makes_one_record_per_connector_listing_its_members() -> None:
    members = ["bob", "carol", "dave", "erin"]
    routes = {
        "bob": [route("bob", "phone", "c1")],
        "carol": [route("carol", "phone", "c2"), route("carol", "laptop", "c1")],
        "dave": [route("dave", "phone", "c1")],
        "erin": [],  # offline
    }
    routed = plan([Delivery(group_message(1), members)], [], routes, alive={"c1", "c2"})
    assert {c: [r.recipients for r in records] for c, records in routed.pushes.items()} == {
        "c1": [["bob", "carol", "dave"]],
        "c2": [["carol"]],
    }
    assert all(r.exclude_device is None for rs in routed.pushes.values() for r in rs)
    assert [(user, m.seq) for user, m in routed.offline] == [("erin", 1)]


def test_the_senders_other_devices_get_a_copy_but_not_the_sending_device() -> None:
    routes = {
        "bob": [route("bob", "phone", "c1")],
        "alice": [
            route("alice", "phone", "c1"),  # the sending device
            route("alice", "laptop", "c2"),
            route("alice", "tablet", "gone"),
        ],
    }
    routed = plan([to(stored(1), device="phone")], [], routes, alive={"c1", "c2"})
    c1, c2 = routed.pushes["c1"], routed.pushes["c2"]
    assert [(r.recipients, r.exclude_device) for r in c1] == [(["bob"], None)]
    assert [(r.recipients, r.exclude_device) for r in c2] == [(["alice"], "phone")]
    # The sender's devices never land on an offline list: they sync instead.
    assert routed.offline == []


def test_sending_device_alone_gets_no_copy() -> None:
    routes = {"alice": [route("alice", "phone", "c1")], "bob": []}
    routed = plan([to(stored(1), device="phone")], [], routes, alive={"c1"})
    assert dict(routed.pushes) == {}
    assert [user for user, _ in routed.offline] == ["bob"]


def test_a_connector_with_very_many_members_gets_records_of_bounded_size() -> None:
    members = [f"u{i}" for i in range(MAX_RECIPIENTS_PER_RECORD + 10)]
    routes = {user: [route(user, "phone", "c1")] for user in members}
    routed = plan([Delivery(group_message(1), members)], [], routes, alive={"c1"})
    sizes = [len(r.recipients) for r in routed.pushes["c1"]]
    assert sizes == [MAX_RECIPIENTS_PER_RECORD, 10]


def test_broadcast_goes_once_to_every_live_connector_and_never_offline() -> None:
    notice = StoredMessage(
        msg_id=message_id(BROADCAST, 1),
        conv_id=BROADCAST,
        seq=1,
        sender="system",
        kind="system",
        text="maintenance at noon",
        ts=1_000,
        client_msg_id="p1",
    )
    routed = plan([Delivery(notice, [])], [], {}, alive=set(), live_connectors=["c1", "c2"])
    assert {c: [(r.kind, r.recipients) for r in rs] for c, rs in routed.pushes.items()} == {
        "c1": [("broadcast", [])],
        "c2": [("broadcast", [])],
    }
    assert routed.offline == []
    assert push_key(routed.pushes["c1"][0]) == BROADCAST


class CountingRegister:
    """The one RegisterStore call ConnectorLiveness makes, with a live set the test sets."""

    def __init__(self, alive: set[str]) -> None:
        self.alive = alive
        self.asked: list[set[str]] = []

    async def alive_connectors(self, ids: Iterable[str]) -> set[str]:
        wanted = set(ids)
        self.asked.append(wanted)
        return wanted & self.alive


async def test_live_connectors_are_remembered_briefly_and_dead_ones_never() -> None:
    now = [100.0]
    register = CountingRegister({"c1"})
    liveness = ConnectorLiveness(cast(RegisterStore, register), 1.0, clock=lambda: now[0])

    assert await liveness.alive(["c1", "c2"]) == {"c1"}
    now[0] += 0.5
    register.alive = {"c2"}  # c1 died, c2 came up
    # c1 is still remembered; c2 was dead, so it is asked again and found.
    assert await liveness.alive(["c1", "c2"]) == {"c1", "c2"}
    assert register.asked == [{"c1", "c2"}, {"c2"}]
    now[0] += 0.6
    # c1's answer is 1.1 s old: asked again, and gone.
    assert await liveness.alive(["c1"]) == set()
