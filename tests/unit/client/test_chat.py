"""The interactive chat's line parsing and message display."""

from __future__ import annotations

import time

from client.chat import format_message, parse_line
from client.messages import Message


def test_at_peer_sends_to_that_peer() -> None:
    parsed = parse_line("@bob  hello there ", None)
    assert (parsed.peer, parsed.text) == ("bob", "hello there")


def test_a_plain_line_goes_to_the_last_peer_or_asks_who() -> None:
    assert parse_line("again", "bob").peer == "bob"
    assert parse_line("again", None).problem


def test_commands_and_mistakes() -> None:
    assert parse_line("/quit", None).command == "quit"
    assert parse_line("/help", None).command == "help"
    assert parse_line("/frobnicate", None).problem
    assert parse_line("@bob", None).problem
    assert parse_line("   ", None).command == "noop"


def test_incoming_messages_show_time_sender_and_text() -> None:
    ts = int(time.mktime((2024, 5, 6, 12, 3, 4, 0, 0, -1)) * 1000)
    message = Message("m", "p:a:b", 1, "alice", "bob", None, "chat", "hi", ts, "c")
    assert format_message(message) == "[12:03:04] alice: hi"
