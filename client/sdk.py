"""The asyncio client SDK: log in, send with acks, receive exactly once, survive reconnects.

Typical use::

    async with Client("alice", "secret") as client:
        ack = await client.send("bob", "hello")
        group = await client.create_group("climbing")   # HTTP, via the dispatcher
        await client.add_members(group.group_id, ["bob"])
        await client.send_to_group(group.group_id, "hi all")
        async for message in client:          # chat, group and system messages
            print(message.kind, message.sender, message.text, message.data)

What it does for the application (docs/protocol.md, "Delivery semantics"):

- finds a connector through the dispatcher and logs in with a token;
- ``send`` retries the same ``client_msg_id`` (on timeout, and on the new
  connection after a reconnect) until the server's SEND_ACK arrives;
- every PUSH is acknowledged with PUSH_ACK (batched) and handed to the
  application once, even when the server delivers it again;
- heartbeats; on connection loss, or a KICK that allows it, reconnects via the
  dispatcher (avoiding the connector that failed) with exponential backoff and
  jitter, then SYNCs every known conversation from the last seq seen and
  delivers what was missed, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from client.backoff import Backoff
from client.delivery import DeliveryTracker
from client.dispatcher_api import (
    DEFAULT_DISPATCHER_URL,
    DispatcherApi,
    FriendList,
    Friendship,
    Group,
    Member,
)
from client.errors import (
    AUTH_CODES,
    RETRYABLE_SEND_CODES,
    AuthFailed,
    ClientClosed,
    ClientError,
    ConnectionLost,
    LoginRateLimited,
    NoConnectorAvailable,
    ServerError,
    code_name,
)
from client.messages import Ack, Message, Session, SyncPage
from schemas.conversations import BROADCAST
from schemas.errors import ErrorCode, ProtocolError
from schemas.protocol import Frame, Op, encode, read_frame

log = logging.getLogger("mmim.client")

# Frames from the server are trusted more than the server trusts ours: a
# SYNC_RESULT page of long messages may exceed the client→server limit.
MAX_INBOUND_FRAME_BYTES = 16 * 1024 * 1024
# PUSH_ACK carries at most this many ids; more pending acks flush at once.
ACK_BATCH_MAX = 256
# A push that skips seqs triggers a SYNC of the gap; the missing message may not
# be readable yet (persisted just after), so the SYNC is retried after these delays.
GAP_SYNC_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0)
# After a reconnect, a second SYNC pass this much later (see _settle_resync).
RESYNC_SETTLE_S = 2.0
_END = object()  # queue sentinel: no more messages will come
# Token problems a fresh token (from the password) fixes.
STALE_TOKEN_CODES = frozenset(
    {ErrorCode.BAD_TOKEN, ErrorCode.TOKEN_EXPIRED, ErrorCode.TOKEN_REVOKED}
)

T = TypeVar("T")


def _syncable(conv_id: str) -> bool:
    """Whether SYNC can fetch this conversation.

    Broadcasts reach whoever is online at the time; they have no history to
    sync, so a skipped broadcast seq is not a gap to fill.
    """
    return conv_id != BROADCAST


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _PendingSend:
    """A SEND waiting for its SEND_ACK; resent with the same client_msg_id until acked."""

    body: dict[str, Any]
    future: asyncio.Future[Ack]


@dataclass(eq=False)
class _Link:
    """One TCP connection to a connector and what is in flight on it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    connector_id: str
    last_rx: float
    session: Session | None = None
    pending: dict[int, asyncio.Future[Frame]] = field(default_factory=dict)
    send_requests: dict[int, str] = field(default_factory=dict)  # request_id → client_msg_id
    unacked_pushes: list[str] = field(default_factory=list)
    ack_timer: asyncio.TimerHandle | None = None
    kick: dict[str, Any] | None = None
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def write(self, frame: bytes) -> bool:
        """Queue a frame; False if the connection is already going away."""
        if self.lost.is_set() or self.writer.is_closing():
            return False
        self.writer.write(frame)
        return True

    async def write_and_drain(self, frame: bytes) -> None:
        """Write and wait for buffer room, so a fast sender cannot grow memory without bound."""
        if not self.write(frame):
            raise ConnectionLost("connection is closed")
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as error:
            self.abort()
            raise ConnectionLost(f"connection lost while writing: {error!r}") from error

    def abort(self) -> None:
        """Drop the connection now; the read loop then sees end of stream."""
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()


class Client:
    """One user's connection to MM-IM (see the module docstring)."""

    def __init__(
        self,
        user: str,
        password: str | None = None,
        *,
        dispatcher_url: str = DEFAULT_DISPATCHER_URL,
        token: str | None = None,
        device: str = "default",
        address: tuple[str, int] | None = None,
        http: httpx.AsyncClient | None = None,
        auto_reconnect: bool = True,
        send_retry_s: float = 5.0,
        login_timeout_s: float = 10.0,
        request_timeout_s: float = 10.0,
        ack_delay_s: float = 0.02,
        heartbeat_interval_s: float | None = None,
        heartbeat_timeout_s: float | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``address`` skips the dispatcher's connector lookup (``token`` is then required
        unless a password lets the dispatcher issue one). Heartbeat timing defaults to
        what LOGIN_ACK announces."""
        self.user = user
        self.password = password
        self.device = device
        self.dispatcher = DispatcherApi(dispatcher_url, http=http)
        self.auto_reconnect = auto_reconnect
        self.send_retry_s = send_retry_s
        self.login_timeout_s = login_timeout_s
        self.request_timeout_s = request_timeout_s
        self.ack_delay_s = ack_delay_s
        self.backoff = backoff or Backoff()
        self.session: Session | None = None
        self.kicked: dict[str, Any] | None = None  # the last KICK body received
        self.reconnects = 0
        self._token = token
        self._address = address
        self._heartbeat_interval_s = heartbeat_interval_s
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._rng = rng or random.Random()
        self._link: _Link | None = None
        self._link_changed = asyncio.Event()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._tracker = DeliveryTracker()
        self._outbox: dict[str, _PendingSend] = {}
        self._next_id = 0
        self._held: list[Message] | None = None  # pushes parked while a resync runs
        self._parked: dict[str, list[Message]] = {}  # conv_id → pushes waiting for a gap
        self._gap_tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._terminal: ClientError | None = None
        self._reconnect_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ accounts

    async def register(self) -> None:
        """Create this user at the dispatcher (``POST /v1/users``); UserExists if taken."""
        if self.password is None:
            raise ValueError("register needs a password")
        await self.dispatcher.register(self.user, self.password)

    async def fetch_token(self) -> str:
        """Get a fresh token with the password (``POST /v1/tokens``)."""
        if self.password is None:
            raise AuthFailed("no password to get a token with", code=int(ErrorCode.BAD_CREDENTIALS))
        issued = await self.dispatcher.issue_token(self.user, self.password)
        self._token = issued.token
        return issued.token

    async def _as_me(self, call: Callable[[str], Awaitable[T]]) -> T:
        """Run a dispatcher call with this user's token; a stale token is replaced once."""
        for attempt in range(2):
            fresh_token = self._token is None
            token = await self._ensure_token()
            try:
                return await call(token)
            except AuthFailed as error:
                stale = error.code in STALE_TOKEN_CODES
                if attempt == 0 and stale and not fresh_token and self.password:
                    self._token = None
                    continue
                raise
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ groups
    # (HTTP calls to the dispatcher; no connection needed. Refusals raise
    # RequestRefused with the server's code, e.g. 3000 NOT_A_MEMBER.)

    async def create_group(self, name: str) -> Group:
        """Create a group; this user becomes its owner and first admin."""
        return await self._as_me(lambda token: self.dispatcher.create_group(token, name))

    async def my_groups(self) -> list[Group]:
        """The groups this user belongs to, with this user's role in each."""
        return await self._as_me(self.dispatcher.my_groups)

    async def group_members(self, group_id: str) -> list[Member]:
        """The members of a group this user belongs to."""
        return await self._as_me(lambda token: self.dispatcher.group_members(token, group_id))

    async def add_members(self, group_id: str, user_ids: Sequence[str]) -> int:
        """Add users to a group this user is an admin of; returns how many were new."""
        if isinstance(user_ids, str):
            raise TypeError("user_ids must be a sequence of user ids, not one string")
        return await self._as_me(
            lambda token: self.dispatcher.add_members(token, group_id, user_ids)
        )

    async def remove_member(self, group_id: str, user_id: str) -> None:
        """Remove a member from a group this user is an admin of."""
        await self._as_me(lambda token: self.dispatcher.remove_member(token, group_id, user_id))

    async def leave_group(self, group_id: str) -> None:
        """Leave a group (its owner cannot)."""
        await self._as_me(lambda token: self.dispatcher.leave_group(token, group_id))

    # ------------------------------------------------------------------ friends
    # (Requests and acceptances reach the other user as system messages, with
    # data {"type": "friend_request" | "friend_accepted", "from": <user>}.)

    async def friend_request(self, peer: str) -> Friendship:
        """Ask ``peer`` for friendship (``accepted`` at once if they had asked us)."""
        return await self._as_me(lambda token: self.dispatcher.friend_request(token, peer))

    async def friend_accept(self, peer: str) -> Friendship:
        """Accept ``peer``'s friend request."""
        return await self._as_me(lambda token: self.dispatcher.friend_accept(token, peer))

    async def friend_reject(self, peer: str) -> None:
        """Reject ``peer``'s friend request (they are not told)."""
        await self._as_me(lambda token: self.dispatcher.friend_reject(token, peer))

    async def friend_list(self) -> FriendList:
        """Friends, requests waiting for our answer, and our open requests."""
        return await self._as_me(self.dispatcher.friend_list)

    async def friend_remove(self, peer: str) -> None:
        """End the friendship with ``peer`` (for both)."""
        await self._as_me(lambda token: self.dispatcher.friend_remove(token, peer))

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.lost.is_set()

    @property
    def connector_id(self) -> str | None:
        return self._link.connector_id if self._link is not None else None

    async def connect(self) -> Session:
        """Find a connector, connect and log in. Raises AuthFailed, DispatcherUnreachable,
        NoConnectorAvailable, ConnectionLost (connector unreachable) or ServerError."""
        if self._closing:
            raise ClientClosed("client is closed")
        link = await self._open_session(frozenset())
        assert link.session is not None
        return link.session

    async def close(self, *, logout: bool = True) -> None:
        """Flush pending PUSH_ACKs, send LOGOUT (the server then drops our route) and close."""
        if self._closing:
            return
        self._closing = True
        task = self._reconnect_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for gap_task in list(self._gap_tasks):
            gap_task.cancel()
        link = self._link
        if link is not None and not link.lost.is_set():
            self._flush_acks(link)
            if logout and link.write(encode(Op.LOGOUT, {}, self._request_id())):
                # The server closes after removing the route; don't wait long for it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(link.lost.wait(), 2.0)
            link.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.lost.wait(), 2.0)
        self._finish(ClientClosed("client closed"))
        await self.dispatcher.aclose()

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ sending

    async def send(
        self,
        to: str | None,
        text: str,
        client_msg_id: str | None = None,
        *,
        group_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a deadline across retries, not one await
    ) -> Ack:
        """Send ``text`` to user ``to`` (or to ``group_id``) and wait for the SEND_ACK.

        The frame is resent with the same ``client_msg_id`` every ``send_retry_s``
        and on every new connection until the ack arrives (the server dedups), or
        ``timeout`` seconds pass (TimeoutError). An ERROR answer raises ServerError,
        except for rate limiting/unavailability, which are retried.
        """
        if (to is None) == (group_id is None):
            raise ValueError("give exactly one of to= and group_id=")
        client_msg_id = client_msg_id or uuid.uuid4().hex
        body: dict[str, Any] = {"client_msg_id": client_msg_id, "text": text}
        if to is not None:
            body["to"] = to
        else:
            body["group_id"] = group_id
        body["client_ts"] = _now_ms()
        loop = asyncio.get_running_loop()
        pending = self._outbox.get(client_msg_id)
        if pending is None:
            pending = _PendingSend(body, loop.create_future())
            self._outbox[client_msg_id] = pending
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while not pending.future.done():
                link = await self._wait_link(deadline)
                request_id = self._request_id()
                link.send_requests[request_id] = client_msg_id
                try:
                    await link.write_and_drain(encode(Op.SEND, pending.body, request_id))
                except ConnectionLost:
                    continue  # the reconnect brings a new link; resend there
                wait = self.send_retry_s
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        raise TimeoutError(f"no SEND_ACK for {client_msg_id} within {timeout}s")
                lost: asyncio.Future[Any] = asyncio.ensure_future(link.lost.wait())
                watched: set[asyncio.Future[Any]] = {pending.future, lost}
                try:
                    await asyncio.wait(watched, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                if deadline is not None and loop.time() >= deadline and not pending.future.done():
                    raise TimeoutError(f"no SEND_ACK for {client_msg_id} within {timeout}s")
            return pending.future.result()
        finally:
            if self._outbox.get(client_msg_id) is pending:
                del self._outbox[client_msg_id]
            if pending.future.done() and not pending.future.cancelled():
                pending.future.exception()  # mark retrieved: we raised something else

    async def send_to_group(
        self,
        group_id: str,
        text: str,
        client_msg_id: str | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - see send()
    ) -> Ack:
        """``send`` to a group; a non-member gets ServerError 3000 NOT_A_MEMBER."""
        return await self.send(None, text, client_msg_id, group_id=group_id, timeout=timeout)

    # ------------------------------------------------------------------ receiving

    async def receive(self) -> Message:
        """The next new message (wrap in ``asyncio.timeout`` to bound the wait).

        Raises ClientClosed after close(), ConnectionLost when the client gave up.
        """
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # every later receive() ends too
            raise self._terminal or ClientClosed("client closed")
        message: Message = item
        return message

    async def messages(self) -> AsyncIterator[Message]:
        """Iterate over new messages until close() (ConnectionLost if the client gives up)."""
        while True:
            try:
                yield await self.receive()
            except ClientClosed:
                return

    def __aiter__(self) -> AsyncIterator[Message]:
        return self.messages()

    # ------------------------------------------------------------------ history

    async def sync(self, conv_id: str, after_seq: int = 0, limit: int | None = None) -> SyncPage:
        """One page of a conversation after ``after_seq`` (ERROR 2005 → ServerError)."""
        page = await self._sync_page(conv_id, after_seq, limit)
        for message in page.messages:
            self._tracker.record(message.msg_id, message.conv_id, message.seq)
        return page

    async def history(self, conv_id: str, after_seq: int = 0) -> list[Message]:
        """Every message of a conversation after ``after_seq``, paging with SYNC."""
        messages: list[Message] = []
        while True:
            page = await self.sync(conv_id, after_seq)
            messages.extend(page.messages)
            if not page.has_more or not page.messages:
                return messages
            after_seq = page.messages[-1].seq

    async def _sync_page(self, conv_id: str, after_seq: int, limit: int | None) -> SyncPage:
        link = await self._wait_link(asyncio.get_running_loop().time() + self.request_timeout_s)
        body: dict[str, Any] = {"conv_id": conv_id, "after_seq": after_seq}
        if limit is not None:
            body["limit"] = limit
        frame = await self._request(link, Op.SYNC, body, self.request_timeout_s)
        return SyncPage.from_body(frame.body)

    # ------------------------------------------------------------------ internals

    def _request_id(self) -> int:
        """Request ids 1..2**32-1, wrapping; 0 is reserved for unsolicited frames."""
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        return self._next_id

    async def _ensure_token(self) -> str:
        return self._token if self._token is not None else await self.fetch_token()

    async def _wait_link(self, deadline: float | None) -> _Link:
        """The current logged-in link, waiting for a reconnect if there is none."""
        loop = asyncio.get_running_loop()
        while True:
            if self._terminal is not None:
                raise self._terminal
            if self._closing:
                raise ClientClosed("client is closed")
            link = self._link
            if link is not None and not link.lost.is_set() and link.session is not None:
                return link
            self._link_changed.clear()
            wait = None if deadline is None else deadline - loop.time()
            if wait is not None and wait <= 0:
                raise TimeoutError("not connected")
            await asyncio.wait_for(self._link_changed.wait(), wait)

    async def _request(
        self, link: _Link, op: Op, body: dict[str, Any], reply_within_s: float
    ) -> Frame:
        """Send a request frame and wait for the reply with the same request id."""
        request_id = self._request_id()
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        link.pending[request_id] = future
        try:
            await link.write_and_drain(encode(op, body, request_id))
            return await asyncio.wait_for(future, reply_within_s)
        finally:
            link.pending.pop(request_id, None)

    async def _open_session(self, exclude: frozenset[str]) -> _Link:
        """Connector lookup, TCP connect and LOGIN; a stale token is replaced once."""
        for attempt in range(2):
            fresh_token = self._token is None
            token = await self._ensure_token()
            try:
                return await self._login(token, exclude)
            except AuthFailed as error:
                refreshable = error.code in STALE_TOKEN_CODES
                if attempt == 0 and refreshable and not fresh_token and self.password:
                    self._token = None
                    continue
                raise
        raise AssertionError("unreachable")

    async def _login(self, token: str, exclude: frozenset[str]) -> _Link:
        if self._address is not None:
            host, port = self._address
            connector_id = ""
        else:
            address = await self.dispatcher.connector(token, exclude)
            self.backoff = address.backoff
            host, port, connector_id = address.host, address.port, address.connector_id
        loop = asyncio.get_running_loop()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.login_timeout_s
            )
        except (OSError, TimeoutError) as error:
            raise ConnectionLost(
                f"cannot connect to connector {connector_id or '?'} at {host}:{port}: {error!r}"
            ) from error
        link = _Link(reader, writer, connector_id, last_rx=loop.time())
        link.tasks.append(asyncio.create_task(self._read_loop(link)))
        try:
            frame = await self._request(
                link, Op.LOGIN, {"token": token, "device": self.device}, self.login_timeout_s
            )
            session = Session.from_body(frame.body)
        except ServerError as error:
            link.abort()
            if error.code in AUTH_CODES:
                raise AuthFailed(
                    f"{code_name(error.code)}: {error.message}", code=error.code
                ) from None
            raise
        except TimeoutError:
            link.abort()
            raise ConnectionLost(f"no LOGIN_ACK from {host}:{port} in time") from None
        except BaseException:
            link.abort()
            raise
        if link.lost.is_set():
            raise ConnectionLost(f"connector at {host}:{port} closed right after LOGIN_ACK")
        link.session = session
        link.connector_id = session.connector_id or connector_id
        self.session = session
        self._link = link
        self._link_changed.set()
        link.tasks.append(asyncio.create_task(self._heartbeat_loop(link, session)))
        log.info("logged in as %s on connector %s", session.user, link.connector_id)
        return link

    async def _read_loop(self, link: _Link) -> None:
        reason = "connection closed by the server"
        try:
            while True:
                try:
                    frame = await read_frame(link.reader, MAX_INBOUND_FRAME_BYTES)
                except ProtocolError as error:
                    if error.fatal:
                        reason = f"unreadable frame from the server: {error.message}"
                        break
                    log.warning("skipping a frame: %s", error.message)
                    continue
                link.last_rx = asyncio.get_running_loop().time()
                self._on_frame(link, frame)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as error:
            if not isinstance(error, asyncio.IncompleteReadError):
                reason = f"connection lost: {error!r}"
        finally:
            self._on_link_lost(link, reason)

    def _on_frame(self, link: _Link, frame: Frame) -> None:
        op, body = frame.op, frame.body
        if op == Op.PUSH:
            self._on_push(link, body)
        elif op == Op.SEND_ACK:
            self._on_send_ack(link, frame)
        elif op == Op.ERROR:
            self._on_error(link, frame)
        elif op == Op.KICK:
            link.kick = body
            self.kicked = body
            log.info("kicked by the server: %s", body)
        elif op in (Op.LOGIN_ACK, Op.HEARTBEAT_ACK, Op.SYNC_RESULT):
            future = link.pending.get(frame.request_id)
            if future is not None and not future.done():
                future.set_result(frame)
        else:
            log.debug("ignoring op %s from the server", op)

    def _on_push(self, link: _Link, body: dict[str, Any]) -> None:
        msg_id = body.get("msg_id")
        if isinstance(msg_id, str):
            # Ack even duplicates: that is what takes them off the offline list.
            self._queue_ack(link, msg_id)
        try:
            message = Message.from_body(body)
        except ClientError as error:
            log.warning("dropping a malformed PUSH: %s", error.message)
            return
        if self._held is not None:
            self._held.append(message)
        else:
            self._deliver_in_order(message)

    def _deliver_in_order(self, message: Message) -> None:
        """Deliver a push, first fetching (SYNC) the messages it skipped, if any."""
        parked = self._parked.get(message.conv_id)
        if parked is not None:
            parked.append(message)
        elif _syncable(message.conv_id) and self._tracker.gap_before(message.conv_id, message.seq):
            # A message fell between connections (or an offline one is still on
            # its way): fetch the gap so the application sees the seqs in order.
            self._parked[message.conv_id] = [message]
            task = asyncio.create_task(self._fill_gap(message.conv_id))
            self._gap_tasks.add(task)
            task.add_done_callback(self._gap_tasks.discard)
        else:
            self._deliver(message)

    async def _fill_gap(self, conv_id: str) -> None:
        try:
            for delay in (0.0, *GAP_SYNC_RETRY_DELAYS_S):
                await asyncio.sleep(delay)
                await self._sync_conversation(
                    conv_id, self._tracker.resume_points().get(conv_id, 0)
                )
                first_parked = min((m.seq for m in self._parked.get(conv_id, ())), default=None)
                if first_parked is None or not self._tracker.gap_before(conv_id, first_parked):
                    return
        except (ClientError, TimeoutError) as error:
            log.warning("cannot fetch the gap in %s: %s", conv_id, error)
        finally:
            # Whatever happened, what we hold goes to the application, in order.
            for message in sorted(self._parked.pop(conv_id, ()), key=lambda m: m.seq):
                self._deliver(message)

    def _deliver(self, message: Message) -> None:
        if self._tracker.accept(message.msg_id, message.conv_id, message.seq):
            self._queue.put_nowait(message)

    def _queue_ack(self, link: _Link, msg_id: str) -> None:
        link.unacked_pushes.append(msg_id)
        if len(link.unacked_pushes) >= ACK_BATCH_MAX:
            self._flush_acks(link)
        elif link.ack_timer is None:
            link.ack_timer = asyncio.get_running_loop().call_later(
                self.ack_delay_s, self._flush_acks, link
            )

    def _flush_acks(self, link: _Link) -> None:
        if link.ack_timer is not None:
            link.ack_timer.cancel()
            link.ack_timer = None
        ids, link.unacked_pushes = link.unacked_pushes, []
        if ids:
            link.write(encode(Op.PUSH_ACK, {"msg_ids": ids}, self._request_id()))

    def _on_send_ack(self, link: _Link, frame: Frame) -> None:
        body = dict(frame.body)
        client_msg_id = link.send_requests.pop(frame.request_id, None)
        body.setdefault("client_msg_id", client_msg_id)
        try:
            ack = Ack.from_body(body)
        except ClientError as error:
            log.warning("malformed SEND_ACK: %s", error.message)
            return
        # Our own message is part of the conversation: a later SYNC must not replay it.
        self._tracker.record(ack.msg_id, ack.conv_id, ack.seq)
        pending = self._outbox.get(ack.client_msg_id)
        if pending is not None and not pending.future.done():
            pending.future.set_result(ack)

    def _on_error(self, link: _Link, frame: Frame) -> None:
        code = frame.body.get("code")
        error = ServerError(
            str(frame.body.get("message", "")),
            code=code if isinstance(code, int) else int(ErrorCode.INTERNAL),
            request_id=frame.request_id,
        )
        future = link.pending.get(frame.request_id)
        if future is not None and frame.request_id:
            if not future.done():
                future.set_exception(error)
            return
        client_msg_id = link.send_requests.pop(frame.request_id, None)
        if client_msg_id is not None and frame.request_id:
            pending = self._outbox.get(client_msg_id)
            if error.code in RETRYABLE_SEND_CODES:
                log.info("send %s not accepted yet (%s); will retry", client_msg_id, error)
            elif pending is not None and not pending.future.done():
                pending.future.set_exception(error)
            return
        log.warning("error from the server: %s", error)

    def _on_link_lost(self, link: _Link, reason: str) -> None:
        if link.lost.is_set():
            return
        link.lost.set()
        if link.ack_timer is not None:
            link.ack_timer.cancel()
        for task in link.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        link.writer.close()
        for future in link.pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(reason))
        if self._link is not link:
            return  # a login that failed, handled by its caller
        self._link = None
        self._link_changed.set()
        if self._closing:
            return
        kick = link.kick
        if kick is not None and not kick.get("reconnect", False):
            self._finish(ConnectionLost(f"kicked by the server: {kick.get('reason', '?')}"))
        elif not self.auto_reconnect:
            self._finish(ConnectionLost(reason))
        else:
            log.warning("connection to %s lost (%s); reconnecting", link.connector_id, reason)
            self._reconnect_task = asyncio.create_task(self._reconnect(link.connector_id))

    def _finish(self, error: ClientError) -> None:
        """The client is done for good: wake every waiter with ``error``."""
        if self._terminal is not None:
            return
        self._terminal = error
        self._link_changed.set()
        for pending in self._outbox.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self._queue.put_nowait(_END)

    async def _heartbeat_loop(self, link: _Link, session: Session) -> None:
        interval = self._heartbeat_interval_s or session.heartbeat_interval_s
        timeout = self._heartbeat_timeout_s or session.heartbeat_timeout_s
        loop = asyncio.get_running_loop()
        while not link.lost.is_set():
            await asyncio.sleep(interval)
            if loop.time() - link.last_rx > timeout:
                log.warning("no frame from the server for %.0fs; dropping the connection", timeout)
                link.abort()
                return
            link.write(encode(Op.HEARTBEAT, {}, self._request_id()))

    async def _reconnect(self, failed_connector: str) -> None:
        exclude = {failed_connector} if failed_connector else set()
        attempt = 0
        while not self._closing:
            await asyncio.sleep(self.backoff.delay_s(attempt, self._rng.random()))
            attempt += 1
            self._held = []  # pushes right after LOGIN_ACK wait for the resync
            try:
                link = await self._open_session(frozenset(exclude))
            except AuthFailed as error:
                self._release_held()
                self._finish(error)
                return
            except (NoConnectorAvailable, LoginRateLimited) as error:
                self._release_held()
                log.warning("reconnect attempt %d: %s", attempt, error.message)
                exclude.clear()  # the excluded one may be the only one left
                if error.retry_after_s:
                    await asyncio.sleep(min(error.retry_after_s, self.backoff.max_ms / 1000))
                continue
            except (ClientError, OSError, TimeoutError) as error:
                self._release_held()
                log.warning("reconnect attempt %d failed: %s", attempt, error)
                continue
            self.reconnects += 1
            await self._resync(link)
            settle = asyncio.create_task(self._settle_resync(link))
            link.tasks.append(settle)  # cancelled with the link
            return

    async def _resync(self, link: _Link) -> None:
        """SYNC every known conversation from its last seen seq, then release parked pushes."""
        try:
            for conv_id, after_seq in self._tracker.resume_points().items():
                await self._sync_one(conv_id, after_seq)
        except (ClientError, TimeoutError) as error:
            log.warning("resync interrupted: %s", error)  # the next reconnect syncs again
        finally:
            self._release_held()

    async def _sync_one(self, conv_id: str, after_seq: int) -> None:
        """Resync one conversation; one we may no longer read does not stop the others."""
        if not _syncable(conv_id):
            return
        try:
            await self._sync_conversation(conv_id, after_seq)
        except ServerError as error:
            if error.code not in (ErrorCode.FORBIDDEN, ErrorCode.NOT_A_MEMBER):
                raise
            # E.g. a group we left or were removed from: nothing more to fetch there.
            log.info("not syncing %s any more: %s", conv_id, error)

    async def _settle_resync(self, link: _Link) -> None:
        """Sync once more a moment after a reconnect.

        The server archives messages asynchronously: one sequenced just before
        the reconnect (and pushed to the connection that died) may become
        readable by SYNC only a moment after the first resync.
        """
        await asyncio.sleep(RESYNC_SETTLE_S)
        if self._link is not link or self._closing:
            return
        with contextlib.suppress(ClientError, TimeoutError):
            for conv_id, after_seq in self._tracker.resume_points().items():
                if conv_id not in self._parked:
                    await self._sync_one(conv_id, after_seq)

    async def _sync_conversation(self, conv_id: str, after_seq: int) -> None:
        """Deliver every message of ``conv_id`` after ``after_seq`` not seen yet, in order."""
        while True:
            page = await self._sync_page(conv_id, after_seq, None)
            for message in page.messages:
                self._deliver(message)
            if not page.has_more or not page.messages:
                return
            after_seq = page.messages[-1].seq

    def _release_held(self) -> None:
        held, self._held = self._held, None
        for message in held or ():
            self._deliver_in_order(message)
