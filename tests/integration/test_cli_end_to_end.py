"""`mmim` end to end: real dispatcher, two connectors and the stream logic on the real stack.

The services get their own Redis database and Kafka topics, so the dispatcher
hands out only this module's connectors and other tests' traffic never mixes
with ours.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from client.sdk import Client
from stack.processes import ManagedProcess, free_port, http_ok, python_module
from stack.testing import TestStack

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
CLI_TIMEOUT_S = 90.0


@dataclass
class Services:
    dispatcher_url: str
    env: dict[str, str]
    processes: list[ManagedProcess]


def _isolated_redis_url(redis_url: str) -> str:
    """The same Redis server, another database (1..15): our own register store."""
    parts = urlsplit(redis_url)
    return urlunsplit(parts._replace(path=f"/{secrets.randbelow(15) + 1}"))


@pytest.fixture(scope="module")
def services(stack: TestStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tag = secrets.token_hex(4)
    logs = tmp_path_factory.mktemp("cli-e2e-logs")
    env = {
        **stack.env,
        "IM_REDIS_URL": _isolated_redis_url(stack.settings.redis_url),
        "IM_MSG_TOPIC": f"im.msg.e2e-{tag}",
        "IM_PERSIST_TOPIC": f"im.persist.e2e-{tag}",
        "IM_PUSH_TOPIC_PREFIX": f"im.push.e2e-{tag}.",
        "IM_MSG_PARTITIONS": "2",
    }
    processes: list[ManagedProcess] = []

    def start(module: str, name: str, extra: dict[str, str], health_url: str) -> None:
        process = ManagedProcess(
            name=name,
            argv=python_module(module),
            log_path=logs / f"{name}.log",
            env={**env, **extra},
            cwd=REPO_ROOT,
        ).start()
        processes.append(process)
        process.wait_until(lambda: http_ok(health_url), 120.0, "healthy")

    try:
        dispatcher_port = free_port()
        dispatcher_url = f"http://127.0.0.1:{dispatcher_port}"
        start(
            "dispatcher",
            "dispatcher",
            {"IM_DISPATCHER_PORT": str(dispatcher_port)},
            f"{dispatcher_url}/healthz",
        )
        for _ in range(2):
            connector_id, tcp_port, http_port = (
                f"c-{secrets.token_hex(4)}",
                free_port(),
                free_port(),
            )
            start(
                "connector",
                connector_id,
                {
                    "IM_CONNECTOR_ID": connector_id,
                    "IM_CONNECTOR_PORT": str(tcp_port),
                    "IM_CONNECTOR_HTTP_PORT": str(http_port),
                },
                f"http://127.0.0.1:{http_port}/healthz",
            )
        web_port = free_port()
        start(
            "stream_logic",
            "stream_logic",
            {"IM_LOGIC_APP_ID": f"mmim-logic-e2e-{tag}", "IM_LOGIC_WEB_PORT": str(web_port)},
            f"http://127.0.0.1:{web_port}/healthz",
        )
        yield Services(dispatcher_url, env, processes)
    finally:
        for process in reversed(processes):
            process.stop()


@dataclass
class Run:
    code: int
    out: str
    err: str

    def lines(self) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in self.out.splitlines() if line.strip()]


def _cli_env(services: Services, password: str) -> dict[str, str]:
    env = {**os.environ, **services.env}
    env.update(IM_DISPATCHER_URL=services.dispatcher_url, IM_PASSWORD=password)
    return env


async def start_cli(
    services: Services, *args: str, password: str = PASSWORD
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client",
        *args,
        cwd=REPO_ROOT,
        env=_cli_env(services, password),
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


async def mmim(services: Services, *args: str, password: str = PASSWORD) -> Run:
    return await finish(await start_cli(services, *args, password=password))


def user_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def registered(services: Services, prefix: str) -> str:
    user = user_id(prefix)
    run = await mmim(services, "register", user)
    assert run.code == 0, run.err
    return user


async def test_registering_a_taken_user_id_fails(services: Services) -> None:
    user = await registered(services, "taken")
    again = await mmim(services, "register", user)
    assert again.code == 1
    assert "already exists" in again.err


async def test_a_wrong_password_is_login_failed(services: Services) -> None:
    alice = await registered(services, "alice")
    run = await mmim(services, "send", "--user", alice, "--to", alice, "x", password="wrong")
    assert run.code == 1
    assert run.err.startswith("mmim: login failed:")


async def test_listen_prints_what_send_sent_in_order(services: Services) -> None:
    alice = await registered(services, "alice")
    bob = await registered(services, "bob")
    listen = await start_cli(services, "listen", "--user", bob, "--count", "5", "--timeout", "60")

    sent = await mmim(services, "send", "--user", alice, "--to", bob, "--repeat", "5", "hello")
    received = await finish(listen)

    assert sent.code == 0, sent.err
    assert received.code == 0, received.err
    acks, messages = sent.lines(), received.lines()
    assert [a["seq"] for a in acks] == [1, 2, 3, 4, 5]
    assert len({a["conv_id"] for a in acks}) == 1
    assert [m["text"] for m in messages] == [f"hello-{n}" for n in range(1, 6)]
    assert [m["msg_id"] for m in messages] == [a["msg_id"] for a in acks]
    assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5]
    assert {(m["from"], m["to"]) for m in messages} == {(alice, bob)}


async def test_messages_sent_while_away_arrive_at_the_next_listen_once(services: Services) -> None:
    alice = await registered(services, "alice")
    bob = await registered(services, "bob")

    sent = await mmim(services, "send", "--user", alice, "--to", bob, "--repeat", "3", "away")
    first = await mmim(services, "listen", "--user", bob, "--count", "3", "--timeout", "60")
    second = await mmim(services, "listen", "--user", bob, "--timeout", "3")

    assert sent.code == 0, sent.err
    assert first.code == 0, first.err
    assert [m["text"] for m in first.lines()] == ["away-1", "away-2", "away-3"]
    assert [m["msg_id"] for m in first.lines()] == [a["msg_id"] for a in sent.lines()]
    # Acked at the first listen, so not delivered again.
    assert second.code == 0 and second.lines() == []


async def test_history_shows_the_conversation_to_its_members(services: Services) -> None:
    alice = await registered(services, "alice")
    bob = await registered(services, "bob")
    sent = await mmim(services, "send", "--user", alice, "--to", bob, "--repeat", "2", "hist")
    conv_id = str(sent.lines()[0]["conv_id"])

    history = await mmim(services, "history", "--user", bob, "--conv", conv_id)

    assert history.code == 0, history.err
    assert [m["text"] for m in history.lines()] == ["hist-1", "hist-2"]


async def test_chat_sends_typed_lines_and_prints_incoming(services: Services) -> None:
    alice = await registered(services, "alice")
    bob = await registered(services, "bob")
    chat = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client",
        "chat",
        "--user",
        alice,
        cwd=REPO_ROOT,
        env=_cli_env(services, PASSWORD),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert chat.stdin is not None and chat.stdout is not None
    chat.stdin.write(f"@{bob} hi bob\n".encode())
    await chat.stdin.drain()
    async with asyncio.timeout(CLI_TIMEOUT_S):
        while b"sent to" not in (line := await chat.stdout.readline()):
            assert line, "chat ended before the message was acked"
    reply = await mmim(services, "send", "--user", bob, "--to", alice, "hi alice")
    async with asyncio.timeout(CLI_TIMEOUT_S):
        while b"hi alice" not in (line := await chat.stdout.readline()):
            assert line, "chat ended before the reply arrived"
    chat.stdin.write(b"/quit\n")
    await chat.stdin.drain()
    ended = await finish(chat)

    assert reply.code == 0, reply.err
    assert f"{bob}: hi alice".encode() in line
    assert ended.code == 0, ended.err


# --- the SDK itself; last, because it kills one of this module's connectors ---------------


async def test_a_resent_client_msg_id_is_stored_once(services: Services) -> None:
    alice_id, bob_id = user_id("alice"), user_id("bob")
    alice = Client(alice_id, PASSWORD, dispatcher_url=services.dispatcher_url)
    try:
        await alice.register()
        await Client(bob_id, PASSWORD, dispatcher_url=services.dispatcher_url).register()
        await alice.connect()
        first = await alice.send(bob_id, "once", client_msg_id="same-id")
        again = await alice.send(bob_id, "once", client_msg_id="same-id")
        after = await alice.send(bob_id, "next")
    finally:
        await alice.close()
    assert (again.msg_id, again.seq) == (first.msg_id, first.seq) == (again.msg_id, 1)
    assert after.seq == 2


async def test_the_sdk_survives_the_loss_of_its_connector(services: Services) -> None:
    alice_id, bob_id = user_id("alice"), user_id("bob")
    alice = Client(alice_id, PASSWORD, dispatcher_url=services.dispatcher_url)
    bob = Client(bob_id, PASSWORD, dispatcher_url=services.dispatcher_url, device="phone")
    try:
        await alice.register()
        await bob.register()
        await bob.connect()
        await alice.connect()
        first = await alice.send(bob_id, "before the crash")
        async with asyncio.timeout(30):
            assert (await bob.receive()).msg_id == first.msg_id

        lost = bob.connector_id
        [crashed] = [p for p in services.processes if p.name == lost]
        crashed.kill()
        acks = [await alice.send(bob_id, f"after the crash {n}", timeout=60) for n in (1, 2)]

        async with asyncio.timeout(60):
            got = [await bob.receive() for _ in acks]
        assert [m.msg_id for m in got] == [a.msg_id for a in acks]
        assert [m.seq for m in got] == [2, 3]
        assert bob.connector_id != lost and bob.reconnects >= 1
    finally:
        await alice.close()
        await bob.close()
