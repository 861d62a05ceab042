"""The TCP server clients hold their long connections to (seed steps 5-8).

One reader task per connection reads frames with :func:`schemas.protocol.read_frame`
and answers them; writes go straight to the transport (no per-write awaits), so a
slow client never blocks anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from auth.tokens import TokenClaims
from config.settings import Settings
from connector import metrics
from connector.frames import (
    error_frame,
    message_body,
    parse_login,
    parse_push_ack,
    parse_send,
    parse_sync,
    push_frame,
)
from connector.kafka import Publisher
from connector.rate_limit import TokenBucket
from connector.sends import PendingSends, SendKey
from connector.sessions import Session, SessionRegistry
from schemas.conversations import direct, group, members_of_direct, system
from schemas.errors import AuthError, ErrorCode, ForbiddenError, ImError, ProtocolError
from schemas.protocol import Frame, Op, encode, read_frame
from schemas.records import ClientMessage, PushRecord, StoredMessage
from schemas.records import encode as encode_record
from schemas.topics import msg_topic, push_topic
from store.backend_errors import BACKEND_ERRORS
from store.register import BindRequest, RegisterStore, SessionRoute

log = logging.getLogger(__name__)

# Ops only the server sends; a client sending one is confused, not malicious.
SERVER_OPS = frozenset(
    {Op.LOGIN_ACK, Op.HEARTBEAT_ACK, Op.SEND_ACK, Op.PUSH, Op.SYNC_RESULT, Op.KICK, Op.ERROR}
)


class TokenVerifier(Protocol):
    def decode(self, token: str) -> TokenClaims: ...


class OfflineInbox(Protocol):
    async def pending(self, user: str) -> list[StoredMessage]: ...
    async def remove(self, user: str, msg_ids: Sequence[str]) -> int: ...


class SessionRoutes(Protocol):
    async def bind(self, request: BindRequest) -> SessionRoute | None: ...
    async def unbind(self, user: str, device: str, session_id: str) -> None: ...


class GroupMembership(Protocol):
    async def is_member(self, group_id: str, user_id: str) -> bool: ...


class History(Protocol):
    async def page(
        self, conv_id: str, after_seq: int, limit: int
    ) -> tuple[list[StoredMessage], bool]: ...


def op_name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return "UNKNOWN"


def now_ms() -> int:
    return int(time.time() * 1000)


def may_sync(user: str, conv_id: str) -> bool:
    """Whether ``user`` may read the history of a 1:1 or system conversation.

    Group conversations need a membership lookup instead (see ``ClientServer._sync``).
    """
    members = members_of_direct(conv_id)
    if members is not None:
        return user in members
    return conv_id == system(user)


def group_of_conversation(conv_id: str) -> str | None:
    """The group id of a group conversation ``g:<group_id>``, else None."""
    kind, sep, group_id = conv_id.partition(":")
    return group_id if kind == "g" and sep and group_id else None


class ClientServer:
    """Accepts client connections and runs the protocol for each of them."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: SessionRegistry,
        pending: PendingSends,
        register: RegisterStore,
        routes: SessionRoutes,
        tokens: TokenVerifier,
        offline: OfflineInbox,
        history: History,
        publisher: Publisher,
        groups: GroupMembership,
    ) -> None:
        self.settings = settings
        self.connector_id = settings.connector_id
        self.registry = registry
        self.pending = pending
        self.register = register
        self.routes = routes
        self.tokens = tokens
        self.offline = offline
        self.history = history
        self.publisher = publisher
        self.groups = groups
        self._server: asyncio.Server | None = None
        self._msg_topic = msg_topic(settings)
        self._handlers = {
            Op.HEARTBEAT: self._heartbeat,
            Op.SEND: self._send,
            Op.PUSH_ACK: self._push_ack,
            Op.SYNC: self._sync,
            Op.LOGOUT: self._logout,
        }

    # --- lifecycle

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve,
            self.settings.connector_host,
            self.settings.connector_port,
            backlog=4096,
            reuse_address=True,
        )
        log.info(
            "connector %s listening on %s:%d",
            self.connector_id,
            self.settings.connector_host,
            self.settings.connector_port,
        )

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def drain(self, timeout_s: float) -> None:
        """KICK every client (reconnect elsewhere) and wait until their sessions are gone."""
        self.stop_accepting()
        sessions = list(self.registry)
        # Routes go first, so nothing more is routed here once a client reconnects elsewhere.
        bound = [s for s in sessions if s.bound]
        for session in bound:
            session.bound = False
        try:
            await asyncio.wait_for(
                self.register.unbind_many(
                    (s.user, s.device, s.session_id)  # type: ignore[misc]
                    for s in bound
                ),
                timeout_s / 2,
            )
        except BACKEND_ERRORS as error:
            log.warning("cannot unbind the drained sessions: %r", error)
        for session in sessions:
            session.kick("draining", reconnect=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.registry.wait_empty(), timeout_s)
        for session in self.registry:
            session.abort()

    # --- one connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(
            writer, TokenBucket(self.settings.send_rate_per_s, self.settings.send_burst)
        )
        self.registry.opened(session)
        try:
            await self._read_loop(session, reader)
        except Exception:
            log.exception("connection of %s failed", session)
        finally:
            await self._finish(session)

    async def _read_loop(self, session: Session, reader: asyncio.StreamReader) -> None:
        max_frame_bytes = self.settings.max_frame_bytes
        while not session.closing:
            try:
                frame = await read_frame(reader, max_frame_bytes)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except ProtocolError as error:
                self._error(session, error.code, error.message, error.request_id)
                if error.fatal:  # the byte stream can no longer be trusted
                    session.close()
                    return
                session.last_active = time.monotonic()
                continue
            session.last_active = time.monotonic()
            metrics.frames_in_of(op_name(frame.op)).inc()
            logging_in = not session.logged_in
            try:
                await self._dispatch(session, frame)
            except ImError as error:
                self._error(session, error.code, error.message, frame.request_id)
                # A failed login ends the connection; so does a bad token later on.
                if isinstance(error, AuthError) or (logging_in and frame.op == Op.LOGIN):
                    session.close()
            except BACKEND_ERRORS as error:
                log.warning("%s on %s for %s: %r", op_name(frame.op), session, session, error)
                self._error(session, ErrorCode.UNAVAILABLE, "service unavailable", frame.request_id)
                if logging_in and frame.op == Op.LOGIN:
                    session.close()
            except Exception:
                log.exception("%s of %s failed", op_name(frame.op), session)
                self._error(session, ErrorCode.INTERNAL, "internal error", frame.request_id)
                if logging_in and frame.op == Op.LOGIN:
                    session.close()

    async def _finish(self, session: Session) -> None:
        """The connection is gone: forget it, and its route if it is still ours."""
        self.registry.closed(session)
        if not session.closing:
            session.close()
        await self._unbind(session)

    async def _unbind(self, session: Session) -> None:
        if not session.bound:
            return
        session.bound = False
        assert session.user and session.device and session.session_id
        try:
            await self.routes.unbind(session.user, session.device, session.session_id)
        except BACKEND_ERRORS as error:
            # The route expires on its own (its TTL is no longer refreshed by us).
            log.warning("cannot unbind %s: %r", session, error)

    def _error(self, session: Session, code: int, message: str, request_id: int) -> None:
        metrics.errors.labels(str(int(code))).inc()
        session.write(error_frame(code, message, request_id))

    def _reply(self, session: Session, op: Op, body: dict[str, Any], request_id: int) -> None:
        metrics.frames_out_of(op.name).inc()
        session.write(encode(op, body, request_id))

    async def _dispatch(self, session: Session, frame: Frame) -> None:
        if not session.logged_in:
            if frame.op == Op.LOGIN:
                await self._login(session, frame)
                return
            raise ImError(ErrorCode.NOT_LOGGED_IN, "log in first")
        handler = self._handlers.get(Op(frame.op))
        if handler is not None:
            await handler(session, frame)
        elif frame.op == Op.LOGIN:
            raise ImError(ErrorCode.ALREADY_LOGGED_IN, "this connection is already logged in")
        else:
            raise ImError(ErrorCode.BAD_REQUEST, f"{op_name(frame.op)} is sent by the server only")

    # --- login

    async def _login(self, session: Session, frame: Frame) -> None:
        request = parse_login(frame.body, frame.request_id)
        # Signature and expiry here; revocation is checked by the bind itself, in
        # the same Redis round trip (a revoked token binds nothing).
        claims = self.tokens.decode(request.token)
        session_id = uuid.uuid4().hex
        login = BindRequest(
            claims.user, request.device, self.connector_id, session_id, unless_revoked=claims.jti
        )
        previous = await self.routes.bind(login)
        session.user = claims.user
        session.device = request.device
        session.session_id = session_id
        session.bound = True
        if session.closing:
            return  # the client left while we were binding; _finish unbinds
        replaced = self.registry.attach(session)
        if replaced is not None:
            replaced.kick("logged_in_elsewhere", reconnect=False)
        self._reply(
            session,
            Op.LOGIN_ACK,
            {
                "user": claims.user,
                "device": request.device,
                "session_id": session.session_id,
                "connector_id": self.connector_id,
                "heartbeat_interval_s": self.settings.heartbeat_interval_s,
                "heartbeat_timeout_s": self.settings.heartbeat_timeout_s,
                "max_frame_bytes": self.settings.max_frame_bytes,
            },
            frame.request_id,
        )
        log.debug("login %s", session)
        if previous is not None and previous.session_id != session.session_id:
            await self._end_previous(previous)
        await self._push_offline(session)

    async def _end_previous(self, previous: SessionRoute) -> None:
        """The same user+device logged in again: end the older session, wherever it is."""
        if previous.connector_id == self.connector_id:
            old = self.registry.by_session_id(previous.session_id)
            if old is not None:
                old.kick("logged_in_elsewhere", reconnect=False)
            return
        try:
            if not await self.register.alive_connectors([previous.connector_id]):
                return  # that connector is gone, and its sessions with it
            record = PushRecord(
                kind="kick",
                recipients=[previous.user],
                session_id=previous.session_id,
                reason="logged_in_elsewhere",
            )
            await self.publisher.publish(
                push_topic(self.settings, previous.connector_id),
                previous.user,
                encode_record(record),
            )
        except BACKEND_ERRORS as error:
            log.warning("cannot kick %s on %s: %r", previous, previous.connector_id, error)

    async def _push_offline(self, session: Session) -> None:
        """Everything waiting for the user, oldest first; it stays listed until PUSH_ACK."""
        assert session.user is not None
        messages = await self.offline.pending(session.user)
        if messages:
            session.write_many([push_frame(message) for message in messages])
            metrics.frames_out_of("PUSH").inc(len(messages))

    # --- logged-in requests

    async def _heartbeat(self, session: Session, frame: Frame) -> None:
        self._reply(session, Op.HEARTBEAT_ACK, {"server_ts": now_ms()}, frame.request_id)

    async def _send(self, session: Session, frame: Frame) -> None:
        if not session.bucket.allow():
            raise ImError(ErrorCode.RATE_LIMITED, "too many requests; slow down")
        assert session.user is not None and session.device is not None
        request = parse_send(frame.body, frame.request_id, self.settings.max_frame_bytes)
        if request.group_id is not None:
            # The verdict goes into the record: the sequencer decides on it (replays too).
            if not await self.groups.is_member(request.group_id, session.user):
                raise ForbiddenError(
                    f"not a member of group {request.group_id}", code=ErrorCode.NOT_A_MEMBER
                )
            conv_id = group(request.group_id)
        else:
            assert request.to is not None
            conv_id = direct(session.user, request.to)
        message = ClientMessage(
            client_msg_id=request.client_msg_id,
            sender=session.user,  # never a client field
            sender_device=session.device,
            conv_id=conv_id,
            kind="chat" if request.group_id is None else "group",
            to=request.to,
            group_id=request.group_id,
            text=request.text,
            client_ts=request.client_ts,
            received_ts=now_ms(),
            reply_connector=self.connector_id,
            # Checked above; the sequencer judges the record by it (schemas/records.py).
            sender_is_member=True if request.group_id is not None else None,
        )
        key: SendKey = (session.user, session.device, request.client_msg_id)
        self.pending.track(key, session, frame.request_id)
        started = time.perf_counter()
        try:
            delivery = await self.publisher.publish(
                self._msg_topic, conv_id, encode_record(message)
            )
        except KafkaError as error:
            self.pending.forget(key, session, frame.request_id)
            log.warning("cannot publish a send of %s: %r", session, error)
            raise ImError(ErrorCode.UNAVAILABLE, "message queue unavailable") from None
        delivery.add_done_callback(
            partial(self._published, session, key, frame.request_id, started)
        )

    def _published(
        self,
        session: Session,
        key: SendKey,
        request_id: int,
        started: float,
        delivery: asyncio.Future[object],
    ) -> None:
        if not delivery.cancelled() and delivery.exception() is None:
            metrics.produce_latency.observe(time.perf_counter() - started)
            return
        # Not durable: the client hears so and may retry the same client_msg_id.
        if self.pending.forget(key, session, request_id):
            self._error(session, ErrorCode.UNAVAILABLE, "message queue unavailable", request_id)

    async def _push_ack(self, session: Session, frame: Frame) -> None:
        assert session.user is not None
        msg_ids = parse_push_ack(frame.body, frame.request_id)
        if msg_ids:
            await self.offline.remove(session.user, msg_ids)

    async def _sync(self, session: Session, frame: Frame) -> None:
        if not session.bucket.allow():
            raise ImError(ErrorCode.RATE_LIMITED, "too many requests; slow down")
        assert session.user is not None
        request = parse_sync(frame.body, frame.request_id, self.settings.sync_page_size)
        group_id = group_of_conversation(request.conv_id)
        allowed = (
            await self.groups.is_member(group_id, session.user)
            if group_id is not None
            else may_sync(session.user, request.conv_id)
        )
        if not allowed:
            raise ForbiddenError("not a member of this conversation")
        messages, has_more = await self.history.page(
            request.conv_id, request.after_seq, request.limit
        )
        body = {
            "conv_id": request.conv_id,
            "messages": [message_body(message) for message in messages],
            "has_more": has_more,
        }
        self._reply(session, Op.SYNC_RESULT, body, frame.request_id)

    async def _logout(self, session: Session, frame: Frame) -> None:
        await self._unbind(session)
        session.close()
