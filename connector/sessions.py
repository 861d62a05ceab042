"""Client connections and logged-in sessions held by this connector.

A :class:`Session` is one TCP connection; it becomes a user's session at login.
It is kept small (``__slots__``) because a connector holds many thousands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator

from connector import metrics
from connector.frames import kick_frame
from connector.rate_limit import TokenBucket

log = logging.getLogger(__name__)

# A client that lets this much pile up unread is dropped; what it missed stays
# in its offline list (removed only on PUSH_ACK) and comes back at the next login.
MAX_WRITE_BUFFER_BYTES = 16 * 1024 * 1024


class Session:
    """One client connection; ``user``/``device``/``session_id`` are set at login."""

    __slots__ = (
        "bound",
        "bucket",
        "closing",
        "closing_since",
        "device",
        "last_active",
        "opened",
        "session_id",
        "transport",
        "user",
        "writer",
    )

    def __init__(self, writer: asyncio.StreamWriter, bucket: TokenBucket) -> None:
        now = time.monotonic()
        self.writer = writer
        self.transport = writer.transport
        self.bucket = bucket
        self.opened = now
        self.last_active = now
        self.user: str | None = None
        self.device: str | None = None
        self.session_id: str | None = None
        self.bound = False  # whether route:{user} was written for this session
        self.closing = False
        self.closing_since = 0.0

    @property
    def logged_in(self) -> bool:
        return self.user is not None

    def write(self, frame: bytes) -> None:
        """Queue one frame; the transport sends it without waiting."""
        if self.closing:
            return
        self.transport.write(frame)
        self._check_backlog()

    def write_many(self, frames: list[bytes]) -> None:
        """Queue several frames in one go (one syscall when the socket is free)."""
        if self.closing or not frames:
            return
        self.transport.writelines(frames)
        self._check_backlog()

    def _check_backlog(self) -> None:
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            log.warning("dropping %s: client does not read (write buffer full)", self)
            self.abort()

    def close(self) -> None:
        """Close after what is queued has been sent (see :meth:`abort` for a stuck peer)."""
        if not self.closing:
            self.closing = True
            self.closing_since = time.monotonic()
        self.transport.close()

    def abort(self) -> None:
        """Drop the connection now, discarding unsent data."""
        if not self.closing:
            self.closing = True
            self.closing_since = time.monotonic()
        self.transport.abort()

    def kick(self, reason: str, *, reconnect: bool) -> None:
        """Tell the client why, then close."""
        self.write(kick_frame(reason, reconnect))
        metrics.frames_out_of("KICK").inc()
        self.close()

    def __repr__(self) -> str:
        return f"Session(user={self.user!r}, device={self.device!r}, id={self.session_id!r})"


class SessionRegistry:
    """Every open connection, and the logged-in ones by user/device and by session id."""

    def __init__(self) -> None:
        self.connections: set[Session] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._by_user: dict[str, dict[str, Session]] = {}
        self._by_id: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self.connections)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self.connections))

    @property
    def session_count(self) -> int:
        return len(self._by_id)

    def opened(self, session: Session) -> None:
        self.connections.add(session)
        self._empty.clear()
        metrics.connections.set(len(self.connections))

    def attach(self, session: Session) -> Session | None:
        """Index a freshly logged-in session; return the local session it replaced."""
        assert session.user is not None and session.device is not None
        assert session.session_id is not None
        devices = self._by_user.setdefault(session.user, {})
        replaced = devices.get(session.device)
        devices[session.device] = session
        self._by_id[session.session_id] = session
        metrics.sessions.set(len(self._by_id))
        return replaced if replaced is not session else None

    def closed(self, session: Session) -> None:
        """Forget a connection; the user/device index only if it still points at it."""
        self.connections.discard(session)
        if session.session_id is not None and self._by_id.get(session.session_id) is session:
            del self._by_id[session.session_id]
        if session.user is not None and session.device is not None:
            devices = self._by_user.get(session.user)
            if devices is not None and devices.get(session.device) is session:
                del devices[session.device]
                if not devices:
                    del self._by_user[session.user]
        if not self.connections:
            self._empty.set()
        metrics.connections.set(len(self.connections))
        metrics.sessions.set(len(self._by_id))

    async def wait_empty(self) -> None:
        """Return once no connection is open."""
        await self._empty.wait()

    def by_session_id(self, session_id: str) -> Session | None:
        return self._by_id.get(session_id)

    def of_user(self, user: str) -> list[Session]:
        """The user's sessions here (all devices)."""
        devices = self._by_user.get(user)
        return list(devices.values()) if devices else []

    def of_device(self, user: str, device: str) -> Session | None:
        devices = self._by_user.get(user)
        return devices.get(device) if devices else None

    def users(self) -> list[str]:
        return list(self._by_user)

    def sessions_of(self, users: Iterable[str]) -> dict[str, list[Session]]:
        return {user: self.of_user(user) for user in users}
