"""The records that flow through Kafka, defined once (msgspec Structs, JSON encoded)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

MessageKind = Literal["chat", "group", "system"]


class ClientMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message as accepted by a connector (or the push service), before sequencing.

    Topic ``im.msg``, key = ``conv_id``.
    """

    client_msg_id: str
    sender: str
    sender_device: str = ""
    conv_id: str
    kind: MessageKind = "chat"
    to: str | None = None
    group_id: str | None = None
    text: str
    # Structured payload of system messages, e.g. {"type": "friend_request", "from": "alice"}.
    data: dict[str, Any] | None = None
    client_ts: int | None = None
    received_ts: int
    # Connector that should receive the send result; None for the push service.
    reply_connector: str | None = None
    # A group send: whether the sender was a member when the connector accepted
    # it. The sequencer decides on this, not on a lookup of its own, so a replay
    # after a crash judges the record as the first pass did. None: not checked
    # (records from before this field); the sequencer then looks it up.
    sender_is_member: bool | None = None


class StoredMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A sequenced message: what is archived, cached, and pushed to recipients.

    Topic ``im.persist``, key = ``conv_id``.
    """

    msg_id: str
    conv_id: str
    seq: int
    sender: str
    kind: MessageKind = "chat"
    to: str | None = None
    group_id: str | None = None
    text: str
    data: dict[str, Any] | None = None
    ts: int
    client_msg_id: str


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of a client's send, routed back to the sender's connector."""

    client_msg_id: str
    sender: str
    sender_device: str = ""
    msg_id: str | None = None
    conv_id: str
    seq: int | None = None
    ts: int | None = None
    error_code: int | None = None
    error_message: str | None = None


class PushRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the logic puts on a connector's push topic ``im.push.<connector_id>``.

    - ``deliver``: ``message`` to every session of ``recipients`` on that connector;
    - ``broadcast``: ``message`` to every logged-in session there (no recipients,
      no offline copies: broadcasts reach whoever is online now);
    - ``send_result``: ``result`` for the sender's pending send;
    - ``kick``: end session ``session_id`` of ``recipients[0]``.
    """

    kind: Literal["deliver", "send_result", "kick", "broadcast"]
    recipients: list[str] = msgspec.field(default_factory=list)
    message: StoredMessage | None = None
    result: SendResult | None = None
    # kick: end this session of recipients[0] (a newer login of the same device won).
    session_id: str | None = None
    reason: str | None = None
    # deliver: the sender's own device that sent the message; the sender's other
    # devices get a copy, this one not (it has the message from its SEND_ACK).
    exclude_device: str | None = None


class FanoutRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A sequenced group message waiting for its fan-out to the members.

    The logic's internal fan-out topic (schemas.topics.fanout_topic), key = ``conv_id``.
    """

    message: StoredMessage
    # The device the sender wrote from: the sender's other devices get a copy.
    sender_device: str = ""


_client_message_decoder = msgspec.json.Decoder(ClientMessage)
_stored_message_decoder = msgspec.json.Decoder(StoredMessage)
_push_record_decoder = msgspec.json.Decoder(PushRecord)
_fanout_record_decoder = msgspec.json.Decoder(FanoutRecord)
_encoder = msgspec.json.Encoder()


def encode(record: msgspec.Struct) -> bytes:
    """JSON bytes of any record above."""
    return _encoder.encode(record)


def decode_client_message(raw: bytes) -> ClientMessage:
    return _client_message_decoder.decode(raw)


def decode_stored_message(raw: bytes) -> StoredMessage:
    return _stored_message_decoder.decode(raw)


def decode_push_record(raw: bytes) -> PushRecord:
    return _push_record_decoder.decode(raw)


def decode_fanout_record(raw: bytes) -> FanoutRecord:
    return _fanout_record_decoder.decode(raw)
