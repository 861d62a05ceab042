"""Sends waiting for their result from the logic, so the ack echoes the right request id."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.sessions import Session

SendKey = tuple[str, str, str]  # (sender, sender_device, client_msg_id)


class PendingSends:
    """(user, device, client_msg_id) → the session and request id that sent it.

    A retry of the same client_msg_id replaces the entry, so the ack goes to the
    latest request; entries whose result never came are dropped by :meth:`expire`.
    """

    def __init__(self) -> None:
        self._pending: dict[SendKey, tuple[Session, int, float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def track(self, key: SendKey, session: Session, request_id: int) -> None:
        self._pending[key] = (session, request_id, time.monotonic())

    def resolve(self, key: SendKey) -> tuple[Session, int] | None:
        """Take the waiting request for a result, if it is still around."""
        entry = self._pending.pop(key, None)
        return (entry[0], entry[1]) if entry is not None else None

    def forget(self, key: SendKey, session: Session, request_id: int) -> bool:
        """Drop the entry only if it is still this request (the produce failed)."""
        entry = self._pending.get(key)
        if entry is not None and entry[0] is session and entry[1] == request_id:
            del self._pending[key]
            return True
        return False

    def expire(self, max_age_s: float) -> int:
        """Drop entries older than ``max_age_s``; return how many."""
        cutoff = time.monotonic() - max_age_s
        stale = [key for key, entry in self._pending.items() if entry[2] < cutoff]
        for key in stale:
            del self._pending[key]
        return len(stale)
