"""``mmim``: register users, send, listen and chat, manage groups and friends from a
terminal (docs/cli.md).

Exit codes: 0 success; 1 the request failed (login failed, user exists, a
send or a groups/friends request was refused, ``listen --count`` not reached);
2 usage error or the dispatcher is unreachable; 3 the service is unavailable
(no live connector, connector unreachable, connection lost for good, 503).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TextIO

import orjson

from client.dispatcher_api import DEFAULT_DISPATCHER_URL
from client.errors import (
    AuthFailed,
    ClientError,
    ConnectionLost,
    DispatcherError,
    DispatcherUnreachable,
    NoConnectorAvailable,
    RequestRefused,
    ServerError,
    ServiceUnavailable,
    UserExists,
)
from client.sdk import Client

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class UsageError(Exception):
    """A problem with the command line itself (exit 2)."""


def emit(record: dict[str, Any], out: TextIO | None = None) -> None:
    """Print one JSON line and flush, so a pipe reader sees it at once."""
    stream = out or sys.stdout
    stream.write(orjson.dumps(record).decode() + "\n")
    stream.flush()


def fail(message: str) -> None:
    print(f"mmim: {message}", file=sys.stderr, flush=True)


def _password(args: argparse.Namespace) -> str:
    password = args.password or os.environ.get("IM_PASSWORD")
    if password:
        return str(password)
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {args.user}: ")
    raise UsageError("no password: give --password or set IM_PASSWORD")


def _client(args: argparse.Namespace, **options: Any) -> Client:
    return Client(
        args.user,
        _password(args),
        dispatcher_url=args.dispatcher,
        device=args.device,
        **options,
    )


async def cmd_register(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        await client.register()
    finally:
        await client.dispatcher.aclose()
    emit({"user_id": args.user, "registered": True})
    return EXIT_OK


def _texts(args: argparse.Namespace) -> list[str]:
    """TEXT, or TEXT-1 .. TEXT-N with ``--repeat N`` (or ``--numbered``)."""
    if args.repeat < 1:
        raise UsageError("--repeat must be at least 1")
    if args.repeat == 1 and not args.numbered:
        return [args.text]
    return [f"{args.text}-{n}" for n in range(1, args.repeat + 1)]


async def _send_all(
    args: argparse.Namespace, texts: list[str], to: str | None, group_id: str | None
) -> int:
    client = _client(args)
    target = {"to": to} if to is not None else {"group_id": group_id}
    try:
        await client.connect()
        # One at a time: the next message leaves only after the previous one is
        # acked, so the conversation keeps the order of the command line.
        for text in texts:
            ack = await client.send(to, text, group_id=group_id, timeout=args.timeout)
            emit({**ack.to_json(), **target, "text": text})
    finally:
        await client.close()
    return EXIT_OK


async def cmd_send(args: argparse.Namespace) -> int:
    return await _send_all(args, _texts(args), args.to, None)


@contextlib.asynccontextmanager
async def _account(args: argparse.Namespace) -> AsyncIterator[Client]:
    """A client for dispatcher calls only (groups, friends): no connection is opened."""
    client = _client(args)
    try:
        yield client
    finally:
        await client.close()


async def cmd_group_create(args: argparse.Namespace) -> int:
    async with _account(args) as client:
        group = await client.create_group(args.name)
    emit(group.to_json())
    return EXIT_OK


async def cmd_group_list(args: argparse.Namespace) -> int:
    async with _account(args) as client:
        groups = await client.my_groups()
    emit({"groups": [group.to_json() for group in groups]})
    return EXIT_OK


async def cmd_group_add(args: argparse.Namespace) -> int:
    async with _account(args) as client:
        added = await client.add_members(args.group_id, args.members)
    emit({"group_id": args.group_id, "user_ids": args.members, "added": added})
    return EXIT_OK


async def cmd_group_remove(args: argparse.Namespace) -> int:
    async with _account(args) as client:
        await client.remove_member(args.group_id, args.member)
    emit({"group_id": args.group_id, "user_id": args.member, "removed": True})
    return EXIT_OK


async def cmd_group_leave(args: argparse.Namespace) -> int:
    async with _account(args) as client:
        await client.leave_group(args.group_id)
    emit({"group_id": args.group_id, "left": True})
    return EXIT_OK


async def cmd_group_members(args: argparse.Namespace) -> int:
    async with _account(args) as client:
        members = await client.group_members(args.group_id)
    emit({"group_id": args.group_id, "members": [member.to_json() for member in members]})
    return EXIT_OK


async def cmd_group_send(args: argparse.Namespace) -> int:
    return await _send_all(args, _texts(args), None, args.group_id)


async def cmd_friend_request(args: argparse.Namespace) -> int:
    async with _account(args) as client:
        friendship = await client.friend_request(args.peer)
    emit(friendship.to_json())
    return EXIT_OK


async def cmd_friend_accept(args: argparse.Namespace) -> int:
    async with _account(args) as client:
        friendship = await client.friend_accept(args.peer)
    emit(friendship.to_json())
    return EXIT_OK


async def cmd_friend_reject(args: argparse.Namespace) -> int:
    async with _account(args) as client:
        await client.friend_reject(args.peer)
    emit({"user_id": args.peer, "rejected": True})
    return EXIT_OK


async def cmd_friend_remove(args: argparse.Namespace) -> int:
    async with _account(args) as client:
        await client.friend_remove(args.peer)
    emit({"user_id": args.peer, "removed": True})
    return EXIT_OK


async def cmd_friend_list(args: argparse.Namespace) -> int:
    async with _account(args) as client:
        listed = await client.friend_list()
    emit(listed.to_json())
    return EXIT_OK


async def cmd_listen(args: argparse.Namespace) -> int:
    client = _client(args)
    stop = asyncio.Event()
    _on_termination(stop.set)
    received = 0
    loop = asyncio.get_running_loop()
    deadline = None if args.timeout is None else loop.time() + args.timeout
    try:
        await client.connect()
        while args.count is None or received < args.count:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            next_message = asyncio.ensure_future(client.receive())
            stopped = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait(
                {next_message, stopped}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            stopped.cancel()
            if next_message not in done:
                next_message.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClientError):
                    await next_message
                break
            emit(next_message.result().to_json())
            received += 1
    finally:
        await client.close()
    if args.count is not None and received < args.count:
        fail(f"timed out: received {received} of {args.count} messages")
        return EXIT_FAILED
    return EXIT_OK


async def cmd_chat(args: argparse.Namespace) -> int:
    from client.chat import run_chat

    client = _client(args)
    stdin_busy = False
    try:
        await client.connect()
        stdin_busy = await run_chat(client)
    finally:
        await client.close()
    if stdin_busy:
        # A thread blocked in input() would abort the interpreter's shutdown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    return EXIT_OK


async def cmd_history(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        await client.connect()
        for message in await client.history(args.conv, args.after):
            emit(message.to_json())
    finally:
        await client.close()
    return EXIT_OK


def _on_termination(callback: Callable[[], None]) -> None:
    """SIGTERM/SIGINT end a long-running command cleanly (acks flushed, LOGOUT sent)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, callback)


def build_parser() -> argparse.ArgumentParser:
    """The ``mmim`` argument parser (common options work before or after the command)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dispatcher",
        default=argparse.SUPPRESS,
        help=f"dispatcher base URL (env IM_DISPATCHER_URL, default {DEFAULT_DISPATCHER_URL})",
    )
    common.add_argument("--password", default=argparse.SUPPRESS, help="password (env IM_PASSWORD)")
    common.add_argument(
        "--device", default=argparse.SUPPRESS, help="device name for this session (default: cli)"
    )
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)

    parser = argparse.ArgumentParser(
        prog="mmim", description="MM-IM command-line client.", parents=[common]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    register = commands.add_parser("register", parents=[common], help="create a user")
    register.add_argument("user")
    register.set_defaults(run=cmd_register)

    send = commands.add_parser("send", parents=[common], help="send messages, print the acks")
    send.add_argument("--user", required=True)
    send.add_argument("--to", required=True, help="recipient user id")
    _add_send_options(send)
    send.set_defaults(run=cmd_send)

    listen = commands.add_parser("listen", parents=[common], help="print received messages")
    listen.add_argument("--user", required=True)
    listen.add_argument("--count", type=int, default=None, help="exit after N messages")
    listen.add_argument("--timeout", type=float, default=None, help="exit after S seconds")
    listen.set_defaults(run=cmd_listen)

    chat = commands.add_parser("chat", parents=[common], help="interactive chat")
    chat.add_argument("--user", required=True)
    chat.set_defaults(run=cmd_chat)

    history = commands.add_parser("history", parents=[common], help="print a conversation")
    history.add_argument("--user", required=True)
    history.add_argument("--conv", required=True, help="conversation id, e.g. p:alice:bob")
    history.add_argument("--after", type=int, default=0, help="only messages after this seq")
    history.set_defaults(run=cmd_history)

    _add_group_commands(commands, common)
    _add_friend_commands(commands, common)
    return parser


def _add_send_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repeat", type=int, default=1, help="send N messages TEXT-1..TEXT-N, in order"
    )
    parser.add_argument(
        "--numbered", action="store_true", help="number the text (TEXT-1) even without --repeat"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each SEND_ACK (30)"
    )
    parser.add_argument("text", metavar="TEXT")


def _add_group_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """``mmim group create|list|add|remove|leave|members|send``."""
    group = commands.add_parser("group", parents=[common], help="create and use groups")
    actions = group.add_subparsers(dest="group_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str, run: Callable[..., Any]) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, parents=[common], help=help_text)
        parser.add_argument("--user", required=True)
        parser.set_defaults(run=run)
        return parser

    create = action("create", "create a group (you become its admin)", cmd_group_create)
    create.add_argument("name", help="the group's display name")
    action("list", "the groups you belong to", cmd_group_list)
    add = action("add", "add members (admins only)", cmd_group_add)
    add.add_argument("group_id", metavar="GROUP_ID")
    add.add_argument("members", nargs="+", metavar="MEMBER", help="user ids to add")
    remove = action("remove", "remove a member (admins only)", cmd_group_remove)
    remove.add_argument("group_id", metavar="GROUP_ID")
    remove.add_argument("member", metavar="MEMBER")
    leave = action("leave", "leave a group", cmd_group_leave)
    leave.add_argument("group_id", metavar="GROUP_ID")
    members = action("members", "list a group's members", cmd_group_members)
    members.add_argument("group_id", metavar="GROUP_ID")
    send = action("send", "send messages to a group, print the acks", cmd_group_send)
    send.add_argument("group_id", metavar="GROUP_ID")
    _add_send_options(send)


def _add_friend_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """``mmim friend request|accept|reject|remove|list``."""
    friend = commands.add_parser("friend", parents=[common], help="friend requests and friends")
    actions = friend.add_subparsers(dest="friend_command", required=True, metavar="ACTION")
    for name, help_text, run in (
        ("request", "ask a user to be your friend", cmd_friend_request),
        ("accept", "accept a user's friend request", cmd_friend_accept),
        ("reject", "reject a user's friend request", cmd_friend_reject),
        ("remove", "end a friendship", cmd_friend_remove),
    ):
        parser = actions.add_parser(name, parents=[common], help=help_text)
        parser.add_argument("--user", required=True)
        parser.add_argument("peer", metavar="PEER", help="the other user's id")
        parser.set_defaults(run=run)
    listing = actions.add_parser("list", parents=[common], help="your friends and open requests")
    listing.add_argument("--user", required=True)
    listing.set_defaults(run=cmd_friend_list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line and fill the defaults that come from the environment."""
    args = build_parser().parse_args(argv)
    if getattr(args, "dispatcher", None) is None:
        args.dispatcher = os.environ.get("IM_DISPATCHER_URL") or DEFAULT_DISPATCHER_URL
    args.password = getattr(args, "password", None)
    args.device = getattr(args, "device", None) or "cli"
    args.verbose = getattr(args, "verbose", None) or 0
    return args


async def _run(
    command: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace
) -> int:
    """Run a command and turn the SDK's errors into a message and an exit code."""
    try:
        return await command(args)
    except UsageError as error:
        fail(str(error))
        return EXIT_USAGE
    except DispatcherUnreachable as error:
        fail(f"cannot reach the dispatcher at {args.dispatcher} ({error.message})")
        return EXIT_USAGE
    except AuthFailed as error:
        fail(f"login failed: {error.message}")
        return EXIT_FAILED
    except UserExists as error:
        fail(error.message)
        return EXIT_FAILED
    except NoConnectorAvailable as error:
        fail(f"service unavailable: {error.message}")
        return EXIT_UNAVAILABLE
    except ServiceUnavailable as error:
        fail(error.message)
        return EXIT_UNAVAILABLE
    except RequestRefused as error:
        fail(f"server refused: {error}")
        return EXIT_FAILED
    except ConnectionLost as error:
        fail(f"connection lost: {error.message}")
        return EXIT_UNAVAILABLE
    except ServerError as error:
        fail(f"server refused: {error}")
        return EXIT_FAILED
    except (DispatcherError, ClientError) as error:
        fail(error.message)
        return EXIT_FAILED
    except TimeoutError as error:
        fail(f"timed out: {error}")
        return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mmim`` and ``python -m client``."""
    args = parse_args(argv)
    level = (
        logging.WARNING
        if args.verbose == 0
        else logging.INFO
        if args.verbose == 1
        else logging.DEBUG
    )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_run(args.run, args))
    except KeyboardInterrupt:
        return 130
