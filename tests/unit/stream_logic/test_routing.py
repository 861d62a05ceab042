"""Routing: live connectors get push records, everyone else the offline list."""

from __future__ import annotations

from schemas.conversations import direct, message_id
from schemas.records import SendResult, StoredMessage
from store.register import SessionRoute
from stream_logic.routing import Reply, plan


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


def test_online_recipient_gets_one_record_per_connector_in_order() -> None:
    routes = {"bob": [route("bob", "phone", "c1"), route("bob", "laptop", "c2")]}
    routed = plan([stored(1), stored(2)], [], routes, alive={"c1", "c2"})
    assert routed.offline == []
    for connector in ("c1", "c2"):
        records = routed.pushes[connector]
        assert [r.kind for r in records] == ["deliver", "deliver"]
        assert [r.message.seq for r in records] == [1, 2]
        assert records[0].recipients == ["bob"]


def test_no_route_or_dead_connector_means_offline() -> None:
    routes = {"bob": [route("bob", "phone", "gone")], "carol": []}
    routed = plan([stored(1), stored(1, to="carol")], [], routes, alive={"c1"})
    assert dict(routed.pushes) == {}
    assert [(user, m.seq) for user, m in routed.offline] == [("bob", 1), ("carol", 1)]


def test_send_results_go_to_the_live_reply_connector_only() -> None:
    replies = [Reply("c1", result(1)), Reply("dead", result(2)), Reply(None, result(3))]
    routed = plan([], replies, {}, alive={"c1"})
    assert list(routed.pushes) == ["c1"]
    assert routed.pushes["c1"][0].kind == "send_result"
    assert routed.pushes["c1"][0].recipients == ["alice"]
    assert routed.pushes["c1"][0].result.seq == 1
