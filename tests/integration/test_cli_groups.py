"""`mmim group` and `mmim friend` end to end: the real dispatcher, two connectors and the
stream logic (the `pipeline` fixture) on the real Kafka, Redis and MariaDB.

Every step is a real `mmim` process, as a user would type it: groups are created
and filled over HTTP, group messages travel the wire protocol and the logic's
fan-out, friend notices come back as system messages.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from tests.integration.conftest import Pipeline

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"  # as in tests/integration/conftest.py
CLI_TIMEOUT_S = 120.0


@dataclass
class Run:
    code: int
    out: str
    err: str

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.out.splitlines() if line.strip()]


async def start_cli(pipeline: Pipeline, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "IM_DISPATCHER_URL": pipeline.dispatcher_url, "IM_PASSWORD": PASSWORD}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client",
        *args,
        cwd=REPO_ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process) -> Run:
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def mmim(pipeline: Pipeline, *args: str) -> Run:
    return await finish(await start_cli(pipeline, *args))


async def listening(pipeline: Pipeline, user: str, count: int) -> asyncio.subprocess.Process:
    """`mmim listen -v`, returned once it is logged in (so what follows is pushed live)."""
    process = await start_cli(
        pipeline, "listen", "--user", user, "--count", str(count), "--timeout", "90", "-v"
    )
    assert process.stderr is not None
    async with asyncio.timeout(CLI_TIMEOUT_S):
        while b"logged in as" not in (line := await process.stderr.readline()):
            assert line, "listen ended before logging in"
    return process


async def register(pipeline: Pipeline, prefix: str) -> str:
    user = f"{prefix}-{secrets.token_hex(4)}"
    run = await mmim(pipeline, "register", user)
    assert run.code == 0, run.err
    return user


async def test_group_messages_reach_online_and_offline_members_in_order(
    pipeline: Pipeline,
) -> None:
    alice, bob, carol, dave = [
        await register(pipeline, name) for name in ("alice", "bob", "carol", "dave")
    ]
    created = await mmim(pipeline, "group", "create", "climbing club", "--user", alice)
    assert created.code == 0, created.err
    [group] = created.lines()
    group_id = group["group_id"]
    assert (group["name"], group["owner"]) == ("climbing club", alice)

    added = await mmim(pipeline, "group", "add", group_id, bob, carol, "--user", alice)
    members = await mmim(pipeline, "group", "members", group_id, "--user", carol)
    assert added.code == 0, added.err
    assert added.lines()[0]["added"] == 2
    assert members.code == 0, members.err
    assert {(m["user_id"], m["role"]) for m in members.lines()[0]["members"]} == {
        (alice, "admin"),
        (bob, "member"),
        (carol, "member"),
    }

    bob_listen = await listening(pipeline, bob, 3)  # online; carol is offline
    sent = await mmim(pipeline, "group", "send", group_id, "--user", alice, "--repeat", "3", "hi")
    assert sent.code == 0, sent.err
    acks = sent.lines()
    assert [a["seq"] for a in acks] == [1, 2, 3]
    assert {(a["conv_id"], a["group_id"]) for a in acks} == {(f"g:{group_id}", group_id)}

    carol_listen = await listening(pipeline, carol, 3)  # logs in after the sends
    for run in (await finish(bob_listen), await finish(carol_listen)):
        assert run.code == 0, run.err
        got = run.lines()
        assert [m["msg_id"] for m in got] == [a["msg_id"] for a in acks]
        assert [(m["seq"], m["text"]) for m in got] == [(1, "hi-1"), (2, "hi-2"), (3, "hi-3")]
        assert {(m["from"], m["group_id"], m["kind"]) for m in got} == {(alice, group_id, "group")}

    # Acked at the first listen: nothing is delivered twice.
    again = await mmim(pipeline, "listen", "--user", carol, "--timeout", "3")
    assert again.code == 0 and again.lines() == []

    outsider = await mmim(pipeline, "group", "send", group_id, "--user", dave, "let me in")
    assert outsider.code == 1
    assert outsider.lines() == []
    assert outsider.err.startswith("mmim: server refused: NOT_A_MEMBER (3000):")
    peek = await mmim(pipeline, "group", "members", group_id, "--user", dave)
    assert peek.code == 1 and "NOT_A_MEMBER (3000)" in peek.err
    not_admin = await mmim(pipeline, "group", "add", group_id, dave, "--user", bob)
    assert not_admin.code == 1 and "FORBIDDEN (2005)" in not_admin.err


async def test_friend_request_and_acceptance_show_up_in_listen(pipeline: Pipeline) -> None:
    alice, bob = [await register(pipeline, name) for name in ("alice", "bob")]

    asked = await mmim(pipeline, "friend", "request", bob, "--user", alice)  # bob offline
    assert asked.code == 0, asked.err
    assert asked.lines() == [{"user_id": bob, "status": "pending"}]

    heard = await mmim(pipeline, "listen", "--user", bob, "--count", "1", "--timeout", "90")
    assert heard.code == 0, heard.err
    [request] = heard.lines()
    assert request["kind"] == "system" and request["conv_id"] == f"s:{bob}"
    assert request["data"] == {"type": "friend_request", "from": alice}

    listed = await mmim(pipeline, "friend", "list", "--user", bob)
    assert listed.lines() == [{"friends": [], "incoming": [alice], "outgoing": []}]

    alice_listen = await listening(pipeline, alice, 1)  # online for the answer
    accepted = await mmim(pipeline, "friend", "accept", alice, "--user", bob)
    assert accepted.code == 0, accepted.err
    assert accepted.lines() == [{"user_id": alice, "status": "accepted"}]
    answer = await finish(alice_listen)
    assert answer.code == 0, answer.err
    [notice] = answer.lines()
    assert notice["kind"] == "system" and notice["conv_id"] == f"s:{alice}"
    assert notice["data"] == {"type": "friend_accepted", "from": bob}

    friends = await mmim(pipeline, "friend", "list", "--user", alice)
    assert friends.lines() == [{"friends": [bob], "incoming": [], "outgoing": []}]
