"""``mmim chat``: a line-based terminal chat on top of the SDK.

Lines ``@peer text`` send ``text`` to ``peer``, ``#group_id text`` to a group;
a line without ``@`` or ``#`` goes to the last one of them. Incoming messages
are printed as they arrive (group messages with their group, system messages
such as friend requests as a sentence). ``/quit`` (or end of input) leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from client.errors import ClientClosed, ClientError
from client.messages import Message
from client.sdk import Client

HELP = (
    "type '@peer text' to send, '#group text' to a group, "
    "'text' for the last peer or group, '/quit' to leave"
)


@dataclass(frozen=True)
class Target:
    """Who a typed line goes to: a user (``@peer``) or a group (``#group_id``)."""

    peer: str | None = None
    group_id: str | None = None

    def __str__(self) -> str:
        return f"group {self.group_id}" if self.group_id is not None else str(self.peer)


@dataclass(frozen=True)
class ChatLine:
    """A parsed input line: a message, a command, or a problem to show the user."""

    target: Target | None = None
    text: str = ""
    command: str | None = None
    problem: str | None = None

    @property
    def peer(self) -> str | None:
        return self.target.peer if self.target is not None else None

    @property
    def group_id(self) -> str | None:
        return self.target.group_id if self.target is not None else None


def parse_line(line: str, last: Target | str | None) -> ChatLine:
    """Interpret one line typed by the user; ``last`` is where the previous message went."""
    if isinstance(last, str):
        last = Target(peer=last)
    line = line.strip()
    if not line:
        return ChatLine(command="noop")
    if line.startswith("/"):
        command = line[1:].split()[0].lower() if len(line) > 1 else ""
        if command in ("quit", "exit", "q"):
            return ChatLine(command="quit")
        if command in ("help", "h", "?"):
            return ChatLine(command="help")
        return ChatLine(problem=f"unknown command {line.split()[0]!r}; {HELP}")
    if line.startswith("@"):
        peer, _, text = line[1:].partition(" ")
        if not peer or not text.strip():
            return ChatLine(problem="write '@peer text'")
        return ChatLine(target=Target(peer=peer), text=text.strip())
    if line.startswith("#"):
        group_id, _, text = line[1:].partition(" ")
        if not group_id or not text.strip():
            return ChatLine(problem="write '#group_id text'")
        return ChatLine(target=Target(group_id=group_id), text=text.strip())
    if last is None:
        return ChatLine(problem="who to? start with '@peer text' or '#group_id text'")
    return ChatLine(target=last, text=line)


def describe_system(message: Message) -> str:
    """A system message as a sentence: ``alice sent you a friend request``."""
    data = message.data or {}
    who = data.get("from")
    if isinstance(who, str):
        if message.data_type == "friend_request":
            return f"{who} sent you a friend request"
        if message.data_type == "friend_accepted":
            return f"{who} accepted your friend request"
    return message.text


def format_message(message: Message) -> str:
    """How an incoming message is shown.

    ``[12:03:04] bob: hi``, ``[12:03:04] [group g1] alice: hi``,
    ``[12:03:04] [system] alice sent you a friend request``.
    """
    stamp = time.strftime("%H:%M:%S", time.localtime(message.ts / 1000))
    where = f" [group {message.group_id}]" if message.group_id else ""
    if message.is_system:
        return f"[{stamp}]{where} [system] {describe_system(message)}"
    return f"[{stamp}]{where} {message.sender}: {message.text}"


class LineReader:
    """Reads stdin lines in a daemon thread, one line per request.

    ``input()`` blocks (and gives readline's line editing), so it runs in a
    thread; it only reads when asked, so after ``/quit`` no thread is left
    holding stdin.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._requests: queue.SimpleQueue[asyncio.Future[str | None]] = queue.SimpleQueue()
        self.reading = False  # True while the thread is blocked in input()
        threading.Thread(target=self._run, name="chat-stdin", daemon=True).start()

    async def next_line(self) -> str | None:
        """The next line typed, or None at end of input."""
        future: asyncio.Future[str | None] = self._loop.create_future()
        self._requests.put(future)
        return await future

    def _run(self) -> None:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - enables editing and history for input()
        while True:
            future = self._requests.get()
            self.reading = True
            try:
                line: str | None = input()
            except (EOFError, KeyboardInterrupt, OSError, ValueError):
                line = None
            self.reading = False
            self._loop.call_soon_threadsafe(_resolve, future, line)
            if line is None:
                return


def _resolve(future: asyncio.Future[str | None], line: str | None) -> None:
    if not future.done():
        future.set_result(line)


async def run_chat(client: Client, out: TextIO | None = None) -> bool:
    """Run the interactive chat until /quit, end of input, or the client gives up.

    Returns True if the stdin thread is still blocked reading (the caller then
    has to end the process without waiting for it).
    """
    stream = out or sys.stdout

    def show(text: str) -> None:
        stream.write(text + "\n")
        stream.flush()

    session = client.session
    where = session.connector_id if session else "?"
    show(f"connected as {client.user} (connector {where}); {HELP}")

    async def print_incoming() -> None:
        try:
            async for message in client:
                show(format_message(message))
        except ClientError as error:
            show(f"! {error.message}")

    reader = LineReader(asyncio.get_running_loop())
    incoming = asyncio.create_task(print_incoming())
    last: Target | None = None
    try:
        while not incoming.done():
            next_line = asyncio.ensure_future(reader.next_line())
            await asyncio.wait({next_line, incoming}, return_when=asyncio.FIRST_COMPLETED)
            if not next_line.done():
                next_line.cancel()
                break
            raw = next_line.result()
            if raw is None:
                break
            parsed = parse_line(raw, last)
            if parsed.command == "quit":
                break
            if parsed.command == "help":
                show(HELP)
            elif parsed.problem:
                show(f"! {parsed.problem}")
            elif parsed.target is not None:
                last = parsed.target
                try:
                    ack = await client.send(
                        parsed.peer, parsed.text, group_id=parsed.group_id, timeout=30.0
                    )
                except ClientClosed:
                    break
                except (ClientError, TimeoutError) as error:
                    show(f"! not sent: {error}")
                else:
                    show(f"  (sent to {parsed.target}, seq {ack.seq})")
    finally:
        incoming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await incoming
    return reader.reading
