"""Per-connection bookkeeping: rate limit, session index, idle sweeping, pending sends."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from config.settings import Settings
from connector.keepalive import IdleSweeper
from connector.rate_limit import TokenBucket
from connector.sends import PendingSends
from connector.sessions import Session, SessionRegistry
from schemas.protocol import decode


class RecordingTransport:
    """Stands in for a socket transport: keeps what was written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, frames: list[bytes]) -> None:
        self.written.extend(frames)

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


def new_session(user: str | None = None, device: str = "d", sid: str = "s") -> Session:
    writer: Any = SimpleNamespace(transport=RecordingTransport())
    session = Session(writer, TokenBucket(10, 2))
    if user is not None:
        session.user, session.device, session.session_id = user, device, sid
    return session


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=2, burst=3, now=0.0)
    assert [bucket.allow(now=0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow(now=0.5) is True  # one token back after half a second
    assert bucket.allow(now=0.5) is False
    assert bucket.allow(now=100.0) is True


def test_registry_replaces_a_device_and_keeps_others() -> None:
    registry = SessionRegistry()
    first, phone2, laptop = (
        new_session("u", "phone", "s1"),
        new_session("u", "phone", "s2"),
        (new_session("u", "laptop", "s3")),
    )
    for session in (first, phone2, laptop):
        registry.opened(session)
    assert registry.attach(first) is None
    assert registry.attach(laptop) is None
    assert registry.attach(phone2) is first
    assert set(registry.of_user("u")) == {phone2, laptop}
    # The replaced session going away must not unindex its successor.
    registry.closed(first)
    assert registry.of_device("u", "phone") is phone2
    assert registry.by_session_id("s2") is phone2
    registry.closed(phone2)
    registry.closed(laptop)
    assert registry.users() == [] and len(registry) == 0


def test_sweeper_closes_silent_and_never_logged_in_connections() -> None:
    settings = Settings(heartbeat_interval_s=1, heartbeat_timeout_s=3, login_timeout_s=2)
    registry = SessionRegistry()
    anonymous, silent, chatty = new_session(), new_session("a"), new_session("b", sid="s2")
    for session in (anonymous, silent, chatty):
        registry.opened(session)
    start = chatty.opened
    chatty.last_active = start + 3.5
    assert IdleSweeper(settings, registry).sweep(now=start + 4) == 2
    assert anonymous.closing and silent.closing and not chatty.closing
    assert decode(anonymous.transport.written[-1]).body["code"] == 1006
    assert decode(silent.transport.written[-1]).body["code"] == 1008
    # A closed peer that never takes its last bytes is dropped after a grace period.
    IdleSweeper(settings, registry).sweep(now=start + 100)
    assert silent.transport.aborted


def test_pending_sends_answer_the_latest_request() -> None:
    pending = PendingSends()
    session = new_session("u")
    pending.track(("u", "d", "m1"), session, 1)
    pending.track(("u", "d", "m1"), session, 2)  # a retry of the same message
    assert pending.forget(("u", "d", "m1"), session, 1) is False
    assert pending.resolve(("u", "d", "m1")) == (session, 2)
    assert pending.resolve(("u", "d", "m1")) is None
    pending.track(("u", "d", "m2"), session, 3)
    assert pending.expire(max_age_s=-1) == 1 and len(pending) == 0
