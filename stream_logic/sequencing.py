"""Per-conversation identity and order: seq numbers, message ids, retry dedup.

Pure logic, no I/O. The state of a conversation lives in a Faust table (see
stream_logic/app.py) whose changelog is written only after a batch's outputs are
durable in Kafka, so a replay after a crash starts from a state at or before the
replayed records and recomputes exactly the same messages:

- ``seq`` = previous seq + 1 (strictly increasing, no gaps);
- ``msg_id`` = uuid5(conv_id, seq) (schemas.conversations.message_id);
- ``ts`` = max(connector receive time, previous ts): deterministic, and never
  decreasing inside a conversation, so offline lists sorted by ts keep seq order;
- ``last_offset``: records at or below it were already applied and are skipped;
- ``recent``: the last DEDUP_WINDOW (sender, client_msg_id) digests, so a
  client's retry gets the original msg_id/seq back instead of a second message.

Group membership comes with the record: the connector that accepted a group send
checked it and says so (``ClientMessage.sender_is_member``), so a replay judges
the record as the first pass did. Only records without that verdict (from before
the field existed) have it looked up by the pipeline (store/groups.py).

docs/operations.md ("Ordering and deduplication") walks through the crash windows.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Literal

import msgspec

from schemas.conversations import (
    BROADCAST,
    ID_PATTERN,
    SYSTEM_SENDER,
    direct,
    group,
    message_id,
    system,
)
from schemas.errors import ErrorCode
from schemas.records import ClientMessage, SendResult, StoredMessage

# Retries of the last this-many messages of a conversation are recognised exactly.
DEDUP_WINDOW = 256

_ID = re.compile(ID_PATTERN)


# Bytes per entry of the packed dedup window.
DIGEST_BYTES = 8
_TS = struct.Struct(">q")


class ConversationState(msgspec.Struct, array_like=True, frozen=True):
    """What the sequencer remembers about one conversation (a table value).

    The dedup window is packed into two byte strings, oldest first, because the
    state is decoded and re-encoded for every batch that touches the conversation:
    ``recent_digests`` holds the DIGEST_BYTES-byte digests of (sender,
    client_msg_id), ``recent_ts`` their timestamps as 8-byte big-endian ints.
    Their seqs need no storing: every new message adds one entry, so the window
    holds the consecutive seqs ending at ``last_seq``.
    """

    last_seq: int = 0
    last_ts: int = 0
    # Offset in the msg topic's partition of the last record applied.
    last_offset: int = -1
    recent_digests: bytes = b""
    recent_ts: bytes = b""

    @property
    def window_size(self) -> int:
        """How many recent sends the state remembers."""
        return len(self.recent_digests) // DIGEST_BYTES

    def find_recent(self, digest: bytes) -> tuple[int, int] | None:
        """(seq, ts) of the remembered send with this digest, if still in the window."""
        position = self.recent_digests.find(digest)
        # A match across two entries' boundary is not an entry: look further.
        while position >= 0 and position % DIGEST_BYTES:
            position = self.recent_digests.find(digest, position + 1)
        if position < 0:
            return None
        index = position // DIGEST_BYTES
        seq = self.last_seq - self.window_size + 1 + index
        (ts,) = _TS.unpack_from(self.recent_ts, index * _TS.size)
        return seq, ts

    def with_send(self, digest: bytes, seq: int, ts: int, offset: int) -> ConversationState:
        """The state after sequencing a new send; the oldest entry leaves a full window."""
        drop = max(0, self.window_size - (DEDUP_WINDOW - 1))
        return ConversationState(
            last_seq=seq,
            last_ts=ts,
            last_offset=offset,
            recent_digests=self.recent_digests[drop * DIGEST_BYTES :] + digest,
            recent_ts=self.recent_ts[drop * _TS.size :] + _TS.pack(ts),
        )


class _LegacyDedupEntry(msgspec.Struct, array_like=True, frozen=True):
    digest: bytes
    seq: int
    ts: int


class _LegacyConversationState(msgspec.Struct, array_like=True, frozen=True):
    """The state as written before the window was packed (still in older changelogs)."""

    last_seq: int = 0
    last_ts: int = 0
    last_offset: int = -1
    recent: tuple[_LegacyDedupEntry, ...] = ()


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(ConversationState)
_legacy_state_decoder = msgspec.msgpack.Decoder(_LegacyConversationState)


def encode_state(state: ConversationState) -> bytes:
    return _state_encoder.encode(state)


def decode_state(raw: bytes | None) -> ConversationState:
    """The stored state, or a fresh one for a conversation never seen."""
    if raw is None:
        return ConversationState()
    try:
        return _state_decoder.decode(raw)
    except msgspec.ValidationError:
        legacy = _legacy_state_decoder.decode(raw)
        return ConversationState(
            last_seq=legacy.last_seq,
            last_ts=legacy.last_ts,
            last_offset=legacy.last_offset,
            recent_digests=b"".join(entry.digest for entry in legacy.recent),
            recent_ts=b"".join(_TS.pack(entry.ts) for entry in legacy.recent),
        )


def dedup_digest(sender: str, client_msg_id: str) -> bytes:
    """8-byte digest: enough to tell apart the sends inside one window, small to store."""
    return hashlib.blake2b(f"{sender}\0{client_msg_id}".encode(), digest_size=8).digest()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with one client message.

    - ``new``: sequenced now; ``message`` is to be persisted and delivered;
    - ``retry``: a resend of an earlier message; only the send result goes out again;
    - ``replay``: this very record was applied before (crash replay); nothing goes out;
    - ``rejected``: refused; only the error goes back to the sender.
    """

    kind: Literal["new", "retry", "replay", "rejected"]
    message: StoredMessage | None = None
    result: SendResult | None = None


def validate(message: ClientMessage) -> tuple[ErrorCode, str] | None:
    """Business checks the logic owns: who may write which conversation id.

    chat: ``p:<a>:<b>`` of sender and ``to``; group: ``g:<group_id>``; system: to
    one user ``s:<to>``, to a group ``g:<group_id>``, or to everyone online
    ``broadcast`` (only the push service publishes system messages).
    Membership is checked separately (``needs_membership``).
    """
    if not _ID.match(message.sender):
        return ErrorCode.BAD_REQUEST, "bad sender id"
    if message.to is not None and message.group_id is not None:
        return ErrorCode.BAD_REQUEST, "a message goes to a user or to a group, not both"
    if message.group_id is not None:
        if message.kind == "chat" or not _ID.match(message.group_id):
            return ErrorCode.BAD_REQUEST, "bad group message"
        expected = group(message.group_id)
    elif message.kind == "group":
        return ErrorCode.BAD_REQUEST, "a group message needs a group id"
    elif message.to is not None:
        if not _ID.match(message.to):
            return ErrorCode.UNKNOWN_RECIPIENT, "a message needs a valid recipient"
        expected = (
            direct(message.sender, message.to) if message.kind == "chat" else system(message.to)
        )
    elif message.kind == "system" and message.sender == SYSTEM_SENDER:
        expected = BROADCAST
    else:
        return ErrorCode.UNKNOWN_RECIPIENT, "a message needs a valid recipient"
    if message.conv_id != expected:
        return ErrorCode.BAD_REQUEST, f"conversation {message.conv_id!r} does not match"
    return None


def needs_membership(message: ClientMessage) -> bool:
    """Whether the sender must be a member of the message's group (the push service needn't)."""
    if message.group_id is None:
        return False
    return not (message.kind == "system" and message.sender == SYSTEM_SENDER)


def _error(message: ClientMessage, code: ErrorCode, text: str) -> SendResult:
    return SendResult(
        client_msg_id=message.client_msg_id,
        sender=message.sender,
        sender_device=message.sender_device,
        conv_id=message.conv_id,
        error_code=int(code),
        error_message=text,
    )


def _stored(message: ClientMessage, seq: int, ts: int) -> StoredMessage:
    """The message as sequenced at ``seq``; a retry rebuilds the same one from its entry."""
    return StoredMessage(
        msg_id=message_id(message.conv_id, seq),
        conv_id=message.conv_id,
        seq=seq,
        sender=message.sender,
        kind=message.kind,
        to=message.to,
        group_id=message.group_id,
        text=message.text,
        data=message.data,
        ts=ts,
        client_msg_id=message.client_msg_id,
    )


def _result(message: ClientMessage, stored: StoredMessage) -> SendResult:
    return SendResult(
        client_msg_id=message.client_msg_id,
        sender=message.sender,
        sender_device=message.sender_device,
        msg_id=stored.msg_id,
        conv_id=stored.conv_id,
        seq=stored.seq,
        ts=stored.ts,
    )


def apply(
    state: ConversationState,
    message: ClientMessage,
    offset: int,
    is_member: bool | None = None,
) -> tuple[ConversationState, Outcome]:
    """Sequence one client message of this conversation, read at ``offset``.

    ``is_member``: whether the sender belongs to the message's group (looked up
    by the caller when ``needs_membership``); None means it could not be checked.
    """
    if offset <= state.last_offset:
        return state, Outcome("replay")
    problem = validate(message)
    if problem is not None:
        code, text = problem
        return state, Outcome("rejected", result=_error(message, code, text))

    digest = dedup_digest(message.sender, message.client_msg_id)
    remembered = state.find_recent(digest)
    if remembered is not None:
        earlier = _stored(message, *remembered)
        moved = msgspec.structs.replace(state, last_offset=offset)
        return moved, Outcome("retry", result=_result(message, earlier))

    # After the dedup: a retry of an accepted send is answered even if the sender left since.
    if needs_membership(message) and not is_member:
        if is_member is None:
            code, text = ErrorCode.UNAVAILABLE, "group membership unavailable; retry"
        else:
            code, text = ErrorCode.NOT_A_MEMBER, f"not a member of group {message.group_id}"
        return state, Outcome("rejected", result=_error(message, code, text))

    seq = state.last_seq + 1
    ts = max(message.received_ts, state.last_ts)
    stored = _stored(message, seq, ts)
    new_state = state.with_send(digest, seq, ts, offset)
    return new_state, Outcome("new", message=stored, result=_result(message, stored))
