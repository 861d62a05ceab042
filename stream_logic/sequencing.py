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

Group membership is the one input that is not in the record: the pipeline looks
it up (store/groups.py) before sequencing and passes the answer in.

docs/operations.md ("Ordering and deduplication") walks through the crash windows.
"""

from __future__ import annotations

import hashlib
import re
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

# The sender of the push service's messages (push/publisher.py); its system
# messages to a group need no membership.


class DedupEntry(msgspec.Struct, array_like=True, frozen=True):
    """One recent send: digest of (sender, client_msg_id), its seq and ts."""

    digest: bytes
    seq: int
    ts: int


class ConversationState(msgspec.Struct, array_like=True, frozen=True):
    """What the sequencer remembers about one conversation (a table value)."""

    last_seq: int = 0
    last_ts: int = 0
    # Offset in the msg topic's partition of the last record applied.
    last_offset: int = -1
    recent: tuple[DedupEntry, ...] = ()


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(ConversationState)


def encode_state(state: ConversationState) -> bytes:
    return _state_encoder.encode(state)


def decode_state(raw: bytes | None) -> ConversationState:
    """The stored state, or a fresh one for a conversation never seen."""
    return ConversationState() if raw is None else _state_decoder.decode(raw)


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
    for entry in state.recent:
        if entry.digest == digest:
            earlier = _stored(message, entry.seq, entry.ts)
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
    recent = (*state.recent[-(DEDUP_WINDOW - 1) :], DedupEntry(digest, seq, ts))
    new_state = ConversationState(last_seq=seq, last_ts=ts, last_offset=offset, recent=recent)
    return new_state, Outcome("new", message=stored, result=_result(message, stored))
