"""Exactly-once delivery to the application on top of at-least-once from the server.

The server may deliver a message more than once (a PUSH whose PUSH_ACK was
lost comes back from the offline list; a SYNC after reconnect overlaps with
pushes). The tracker remembers what the application already got, per
conversation by sequence number and globally by msg_id, and knows from which
seq to SYNC each conversation after a reconnect.
"""

from __future__ import annotations

from collections import OrderedDict


class ConversationCursor:
    """The seqs seen in one conversation: a contiguous run plus stragglers above/below it."""

    __slots__ = ("high", "low", "sparse")

    def __init__(self) -> None:
        self.low: int | None = None
        self.high: int | None = None
        self.sparse: set[int] = set()

    def seen(self, seq: int) -> bool:
        if self.low is not None and self.high is not None and self.low <= seq <= self.high:
            return True
        return seq in self.sparse

    def add(self, seq: int) -> None:
        """Record ``seq``; the contiguous run grows and absorbs stragglers it reaches."""
        if self.low is None or self.high is None:
            self.low = self.high = seq
        elif self.seen(seq):
            return
        elif seq == self.high + 1:
            self.high = seq
        elif seq == self.low - 1:
            self.low = seq
        else:
            self.sparse.add(seq)
            return
        while self.high + 1 in self.sparse:
            self.high += 1
            self.sparse.discard(self.high)
        while self.low - 1 in self.sparse:
            self.low -= 1
            self.sparse.discard(self.low)

    @property
    def resume_after(self) -> int:
        """SYNC from here after a reconnect: the end of the contiguous run.

        Gaps above it are fetched again and the seqs already seen are dropped,
        so nothing between the first message seen and the newest one is missed.
        """
        return self.high if self.high is not None else 0


class DeliveryTracker:
    """Decides whether a received message is new to the application."""

    def __init__(self, max_remembered_ids: int = 100_000) -> None:
        self._max_ids = max_remembered_ids
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._cursors: dict[str, ConversationCursor] = {}

    def is_duplicate(self, msg_id: str, conv_id: str, seq: int) -> bool:
        """True if this message (by msg_id, or by its place in the conversation) was seen."""
        if msg_id in self._ids:
            return True
        cursor = self._cursors.get(conv_id)
        return cursor is not None and cursor.seen(seq)

    def record(self, msg_id: str, conv_id: str, seq: int) -> None:
        """Remember a message (delivered to the app, or sent by us and acked)."""
        self._ids[msg_id] = None
        if len(self._ids) > self._max_ids:
            self._ids.popitem(last=False)
        self._cursors.setdefault(conv_id, ConversationCursor()).add(seq)

    def accept(self, msg_id: str, conv_id: str, seq: int) -> bool:
        """Record the message and return True if it is new, False for a duplicate."""
        if self.is_duplicate(msg_id, conv_id, seq):
            return False
        self.record(msg_id, conv_id, seq)
        return True

    def gap_before(self, conv_id: str, seq: int) -> bool:
        """True if ``seq`` skips seqs after the contiguous run of a known conversation.

        A new conversation has no gap: the client may have joined it midway.
        """
        cursor = self._cursors.get(conv_id)
        if cursor is None or cursor.high is None or cursor.seen(seq):
            return False
        return seq > cursor.high + 1

    def resume_points(self) -> dict[str, int]:
        """conv_id → the seq to SYNC after, for every conversation seen so far."""
        return {conv_id: cursor.resume_after for conv_id, cursor in self._cursors.items()}
