"""The mmim command line: options, environment, exit codes and error messages."""

from __future__ import annotations

import argparse

import pytest

from client import cli
from client.errors import (
    AuthFailed,
    ConnectionLost,
    DispatcherUnreachable,
    NoConnectorAvailable,
    ServerError,
    UserExists,
)
from stack.processes import free_port


def test_dispatcher_and_password_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("IM_DISPATCHER_URL", "http://dispatch.example:9")
    monkeypatch.setenv("IM_PASSWORD", "from-env")
    args = cli.parse_args(["send", "--user", "a", "--to", "b", "hi"])
    assert args.dispatcher == "http://dispatch.example:9"
    assert cli._password(args) == "from-env"


def test_options_beat_the_environment_before_or_after_the_command(monkeypatch) -> None:
    monkeypatch.setenv("IM_DISPATCHER_URL", "http://env:1")
    before = cli.parse_args(["--dispatcher", "http://opt:2", "listen", "--user", "a"])
    after = cli.parse_args(["listen", "--user", "a", "--dispatcher", "http://opt:3"])
    assert (before.dispatcher, after.dispatcher) == ("http://opt:2", "http://opt:3")


def test_the_default_dispatcher_is_local(monkeypatch) -> None:
    monkeypatch.delenv("IM_DISPATCHER_URL", raising=False)
    args = cli.parse_args(["register", "alice"])
    assert args.dispatcher == "http://127.0.0.1:8080" and args.user == "alice"


def test_an_unreachable_dispatcher_is_exit_2_with_a_clear_message(monkeypatch, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code = cli.main(
        ["--dispatcher", url, "--password", "pw", "send", "--user", "a", "--to", "b", "x"]
    )
    assert code == 2
    assert f"cannot reach the dispatcher at {url}" in capsys.readouterr().err


def test_no_password_is_a_usage_error(monkeypatch, capsys) -> None:
    monkeypatch.delenv("IM_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert cli.main(["register", "alice"]) == 2
    assert "no password" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "exit_code", "message"),
    [
        (AuthFailed("bad credentials", code=2003), 1, "login failed: bad credentials"),
        (UserExists("user 'a' already exists", status=409), 1, "already exists"),
        (DispatcherUnreachable("ConnectError"), 2, "cannot reach the dispatcher"),
        (NoConnectorAvailable("no connector"), 3, "service unavailable"),
        (ConnectionLost("kicked"), 3, "connection lost: kicked"),
        (ServerError("no user x", code=3001), 1, "UNKNOWN_RECIPIENT (3001): no user x"),
        (TimeoutError("no SEND_ACK"), 1, "timed out"),
    ],
)
async def test_errors_become_an_exit_code_and_one_line(error, exit_code, message, capsys) -> None:
    async def command(args: argparse.Namespace) -> int:
        raise error

    args = argparse.Namespace(dispatcher="http://d")
    assert await cli._run(command, args) == exit_code
    assert message in capsys.readouterr().err
