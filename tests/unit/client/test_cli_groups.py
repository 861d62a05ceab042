"""``mmim group`` and ``mmim friend``: parsing, JSON output and exit codes (doubles in conftest)."""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest

from client import cli
from client.chat import Target, format_message, parse_line
from client.errors import RequestRefused, ServiceUnavailable
from client.messages import Message
from client.sdk import Client

PASSWORDS = {"alice": "pw-alice", "bob": "pw-bob", "carol": "pw-carol"}  # as in conftest
Mmim = Callable[..., Awaitable[tuple[int, list[dict[str, Any]], str]]]


@pytest.fixture
async def mmim(
    http_for: Callable[[], httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch, capsys
) -> AsyncIterator[Mmim]:
    """Run an mmim command in-process against the doubles: (exit code, JSON lines, stderr)."""
    opened: list[httpx.AsyncClient] = []

    def client(*args: Any, **options: Any) -> Client:
        http = http_for()
        opened.append(http)
        return Client(*args, http=http, **options)

    monkeypatch.setattr(cli, "Client", client)
    monkeypatch.setattr(cli, "_on_termination", lambda callback: None)

    async def run(*argv: str, user: str = "alice") -> tuple[int, list[dict[str, Any]], str]:
        args = cli.parse_args(
            [*argv, "--user", user, "--password", PASSWORDS[user], "--dispatcher", "http://d.test"]
        )
        code = await cli._run(args.run, args)
        captured = capsys.readouterr()
        lines = [orjson.loads(line) for line in captured.out.splitlines() if line.strip()]
        return code, lines, captured.err

    yield run
    for http in opened:
        await http.aclose()


def test_group_and_friend_commands_parse_with_common_options_anywhere() -> None:
    add = cli.parse_args(["--password", "pw", "group", "add", "g1", "bob", "carol", "--user", "a"])
    send = cli.parse_args(
        ["group", "send", "g1", "--user", "a", "--repeat", "3", "hi", "--dispatcher", "http://x"]
    )
    friend = cli.parse_args(["friend", "request", "bob", "--user", "a", "--device", "laptop"])
    listing = cli.parse_args(["friend", "list", "--user", "a"])

    assert (add.run, add.group_id, add.members, add.password) == (
        cli.cmd_group_add,
        "g1",
        ["bob", "carol"],
        "pw",
    )
    assert (send.run, send.group_id, send.repeat, send.text, send.dispatcher) == (
        cli.cmd_group_send,
        "g1",
        3,
        "hi",
        "http://x",
    )
    assert (friend.run, friend.peer, friend.device) == (cli.cmd_friend_request, "bob", "laptop")
    assert listing.run is cli.cmd_friend_list


@pytest.mark.parametrize(
    "argv",
    [
        ["group", "add", "g1", "--user", "a"],  # no member
        ["group", "create", "--user", "a"],  # no name
        ["group", "send", "g1", "--user", "a"],  # no text
        ["group", "members", "g1"],  # no --user
        ["group", "frobnicate", "--user", "a"],
        ["friend", "poke", "bob", "--user", "a"],
    ],
)
def test_incomplete_group_and_friend_commands_are_usage_errors(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.parse_args(argv)
    assert caught.value.code == 2
    assert "usage: mmim" in capsys.readouterr().err


async def test_group_create_add_members_list_and_leave_print_json(mmim: Mmim) -> None:
    code, [created], _ = await mmim("group", "create", "climbing")
    group_id = created["group_id"]
    added = await mmim("group", "add", group_id, "bob", "carol")
    members = await mmim("group", "members", group_id, user="bob")
    left = await mmim("group", "leave", group_id, user="carol")
    mine = await mmim("group", "list", user="bob")

    assert code == 0 and created == {"group_id": group_id, "name": "climbing", "owner": "alice"}
    assert added[:2] == (0, [{"group_id": group_id, "user_ids": ["bob", "carol"], "added": 2}])
    assert members[0] == 0
    assert members[1][0]["members"] == [
        {"user_id": "alice", "role": "admin"},
        {"user_id": "bob", "role": "member"},
        {"user_id": "carol", "role": "member"},
    ]
    assert left[:2] == (0, [{"group_id": group_id, "left": True}])
    assert mine[1][0]["groups"][0] == {
        "group_id": group_id,
        "name": "climbing",
        "owner": "alice",
        "role": "member",
    }


async def test_group_refusals_exit_1_with_the_servers_message(mmim: Mmim) -> None:
    _, [created], _ = await mmim("group", "create", "g")
    group_id = created["group_id"]
    await mmim("group", "add", group_id, "bob")

    not_admin = await mmim("group", "add", group_id, "carol", user="bob")
    not_member = await mmim("group", "members", group_id, user="carol")
    unknown_user = await mmim("group", "add", group_id, "zoe")

    assert not_admin[0] == 1 and not_admin[1] == []
    assert not_admin[2].strip() == (
        f"mmim: server refused: FORBIDDEN (2005): only admins of group '{group_id}' "
        "manage its members"
    )
    assert not_member[0] == 1
    assert "NOT_A_MEMBER (3000): you are not a member of group" in not_member[2]
    assert unknown_user[0] == 1 and "no such users: zoe" in unknown_user[2]


async def test_group_send_prints_an_ack_line_per_message_in_order(mmim: Mmim, backend) -> None:
    _, [created], _ = await mmim("group", "create", "g")
    group_id = created["group_id"]
    await mmim("group", "add", group_id, "bob")

    code, acks, err = await mmim("group", "send", group_id, "--repeat", "3", "hello")

    assert code == 0, err
    assert [a["seq"] for a in acks] == [1, 2, 3]
    assert [a["text"] for a in acks] == ["hello-1", "hello-2", "hello-3"]
    assert {(a["conv_id"], a["group_id"]) for a in acks} == {(f"g:{group_id}", group_id)}
    assert all(a["msg_id"] and a["client_msg_id"] and a["ts"] for a in acks)
    stored = backend.history[f"g:{group_id}"]
    assert [m["msg_id"] for m in stored] == [a["msg_id"] for a in acks]


async def test_a_non_members_group_send_exits_1_with_not_a_member(mmim: Mmim) -> None:
    _, [created], _ = await mmim("group", "create", "g")

    code, acks, err = await mmim("group", "send", created["group_id"], "hi", user="carol")

    assert (code, acks) == (1, [])
    assert err.strip() == (
        f"mmim: server refused: NOT_A_MEMBER (3000): not a member of group {created['group_id']}"
    )


async def test_friend_commands_and_the_system_messages_listen_prints(mmim: Mmim) -> None:
    requested = await mmim("friend", "request", "bob")
    heard = await mmim("listen", "--count", "1", "--timeout", "5", user="bob")
    listed = await mmim("friend", "list", user="bob")
    accepted = await mmim("friend", "accept", "alice", user="bob")
    answer = await mmim("listen", "--count", "1", "--timeout", "5")
    removed = await mmim("friend", "remove", "bob")
    again = await mmim("friend", "reject", "alice", user="bob")

    assert requested[:2] == (0, [{"user_id": "bob", "status": "pending"}])
    assert heard[0] == 0
    [notice] = heard[1]
    assert (notice["kind"], notice["from"], notice["conv_id"]) == ("system", "system", "s:bob")
    assert notice["data"] == {"type": "friend_request", "from": "alice"}
    assert listed[1] == [{"friends": [], "incoming": ["alice"], "outgoing": []}]
    assert accepted[:2] == (0, [{"user_id": "alice", "status": "accepted"}])
    assert answer[1][0]["data"] == {"type": "friend_accepted", "from": "bob"}
    assert removed[:2] == (0, [{"user_id": "bob", "removed": True}])
    assert again[0] == 1 and "NOT_FOUND (2006)" in again[2]


async def test_listen_prints_group_messages_with_their_group(mmim: Mmim) -> None:
    _, [created], _ = await mmim("group", "create", "g")
    group_id = created["group_id"]
    await mmim("group", "add", group_id, "bob")
    await mmim("group", "send", group_id, "--repeat", "2", "yo")

    code, messages, err = await mmim("listen", "--count", "2", "--timeout", "5", user="bob")

    assert code == 0, err
    assert [(m["seq"], m["text"]) for m in messages] == [(1, "yo-1"), (2, "yo-2")]
    assert {(m["group_id"], m["kind"], m["from"]) for m in messages} == {
        (group_id, "group", "alice")
    }


@pytest.mark.parametrize(
    ("error", "exit_code", "message"),
    [
        (
            RequestRefused("only admins of group 'g1' manage its members", status=403, code=2005),
            1,
            "mmim: server refused: FORBIDDEN (2005): only admins of group 'g1'",
        ),
        (RequestRefused("weird", status=418), 1, "mmim: server refused: HTTP 418: weird"),
        (ServiceUnavailable("service unavailable: queue down"), 3, "service unavailable"),
    ],
)
async def test_dispatcher_refusals_become_exit_codes(error, exit_code, message, capsys) -> None:
    async def command(args: argparse.Namespace) -> int:
        raise error

    assert await cli._run(command, argparse.Namespace(dispatcher="http://d")) == exit_code
    assert message in capsys.readouterr().err


# --- mmim chat -----------------------------------------------------------------


def at(hms: tuple[int, int, int]) -> int:
    return int(time.mktime((2024, 5, 6, *hms, 0, 0, -1)) * 1000)


def test_hash_group_sends_to_the_group_and_plain_lines_follow_it() -> None:
    parsed = parse_line("#g123  hello all ", None)
    assert (parsed.group_id, parsed.peer, parsed.text) == ("g123", None, "hello all")
    assert parse_line("more", parsed.target).group_id == "g123"
    assert parse_line("back to bob", Target(peer="bob")).peer == "bob"
    assert parse_line("#g123", None).problem
    assert "#group" in (parse_line("to whom?", None).problem or "")


def test_chat_shows_group_and_system_messages() -> None:
    ts = at((12, 3, 4))
    group = Message("m1", "g:g123", 1, "alice", None, "g123", "group", "hi", ts, "c1")
    request = Message(
        "m2",
        "s:bob",
        1,
        "system",
        "bob",
        None,
        "system",
        "alice wants to be your friend",
        ts,
        "p1",
        {"type": "friend_request", "from": "alice"},
    )
    accepted = Message(
        "m3", "s:alice", 2, "system", "alice", None, "system", "x", ts, "p2",
        {"type": "friend_accepted", "from": "bob"},
    )  # fmt: skip
    notice = Message("m4", "broadcast", 7, "system", None, None, "system", "bye", ts, "p3")
    in_group = Message("m5", "g:g123", 2, "system", None, "g123", "system", "welcome", ts, "p4")

    assert format_message(group) == "[12:03:04] [group g123] alice: hi"
    assert format_message(request) == "[12:03:04] [system] alice sent you a friend request"
    assert format_message(accepted) == "[12:03:04] [system] bob accepted your friend request"
    assert format_message(notice) == "[12:03:04] [system] bye"
    assert format_message(in_group) == "[12:03:04] [group g123] [system] welcome"
