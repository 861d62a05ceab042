"""What the connector accepts from clients and what its frames look like."""

from __future__ import annotations

import pytest

from connector.frames import (
    message_body,
    parse_login,
    parse_push_ack,
    parse_send,
    parse_sync,
)
from connector.server import group_of_conversation, may_sync
from schemas.errors import ErrorCode, ImError
from schemas.records import StoredMessage


def test_login_device_defaults_and_is_bounded() -> None:
    assert parse_login({"token": "t"}, 1).device == "default"
    assert parse_login({"token": "t", "device": "phone"}, 1).device == "phone"
    for body in ({}, {"token": ""}, {"token": 5}, {"token": "t", "device": "x" * 65}):
        with pytest.raises(ImError) as caught:
            parse_login(body, 7)
        assert caught.value.code == ErrorCode.BAD_REQUEST


def test_send_validation() -> None:
    good = {"client_msg_id": "m1", "to": "bob", "text": "hi", "client_ts": 5}
    request = parse_send(good, 1, 1000)
    assert (request.client_msg_id, request.to, request.text, request.client_ts) == (
        "m1",
        "bob",
        "hi",
        5,
    )
    bad_bodies = [
        {**good, "client_msg_id": ""},
        {**good, "client_msg_id": "x" * 129},
        {**good, "to": "bob:evil"},
        {**good, "to": None},
        {**good, "text": ""},
        {**good, "text": 3},
        {**good, "text": "x" * 1001},
        {**good, "client_ts": True},
        {**good, "client_ts": -1},
    ]
    for body in bad_bodies:
        with pytest.raises(ImError) as caught:
            parse_send(body, 9, 1000)
        assert caught.value.code == ErrorCode.BAD_REQUEST, body


def test_a_send_goes_to_a_user_or_a_group_never_both() -> None:
    request = parse_send({"client_msg_id": "m", "group_id": "g1", "text": "hi"}, 1, 100)
    assert (request.group_id, request.to) == ("g1", None)
    for body in (
        {"client_msg_id": "m", "group_id": "g1", "to": "bob", "text": "hi"},
        {"client_msg_id": "m", "text": "hi"},
        {"client_msg_id": "m", "group_id": "g:1", "text": "hi"},
        {"client_msg_id": "m", "group_id": 7, "text": "hi"},
    ):
        with pytest.raises(ImError) as caught:
            parse_send(body, 1, 100)
        assert caught.value.code == ErrorCode.BAD_REQUEST, body


def test_group_conversations_are_recognised() -> None:
    assert group_of_conversation("g:team") == "team"
    assert group_of_conversation("p:a:b") is None
    assert group_of_conversation("g:") is None


def test_sync_bounds() -> None:
    assert parse_sync({"conv_id": "p:a:b"}, 1, 50).limit == 50
    assert parse_sync({"conv_id": "p:a:b", "after_seq": 3, "limit": 2}, 1, 50).after_seq == 3
    for body in (
        {"conv_id": "p:a:b", "after_seq": -1},
        {"conv_id": "p:a:b", "limit": 0},
        {"conv_id": "p:a:b", "limit": 51},
        {"after_seq": 1},
    ):
        with pytest.raises(ImError):
            parse_sync(body, 1, 50)


def test_push_ack_needs_a_list_of_ids() -> None:
    assert parse_push_ack({"msg_ids": ["a", "b"]}, 1) == ["a", "b"]
    for body in ({}, {"msg_ids": "a"}, {"msg_ids": [1]}, {"msg_ids": ["x"] * 1001}):
        with pytest.raises(ImError):
            parse_push_ack(body, 1)


def test_only_members_may_sync() -> None:
    assert may_sync("alice", "p:alice:bob")
    assert may_sync("bob", "p:alice:bob")
    assert not may_sync("carol", "p:alice:bob")
    assert may_sync("carol", "s:carol")
    assert not may_sync("carol", "s:alice")
    assert not may_sync("alice", "g:team")


def test_push_body_names_the_sender_from() -> None:
    message = StoredMessage(
        msg_id="id1",
        conv_id="p:a:b",
        seq=3,
        sender="a",
        to="b",
        text="hi",
        ts=10,
        client_msg_id="c1",
    )
    assert message_body(message) == {
        "msg_id": "id1",
        "conv_id": "p:a:b",
        "seq": 3,
        "from": "a",
        "to": "b",
        "group_id": None,
        "kind": "chat",
        "text": "hi",
        "data": None,
        "ts": 10,
        "client_msg_id": "c1",
    }
