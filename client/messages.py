"""What the SDK hands to applications: received messages, send acks, sync pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from client.errors import ClientError


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ClientError(f"server frame field {key!r} is not a string: {value!r}")
    return value


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClientError(f"server frame field {key!r} is not an integer: {value!r}")
    return value


def _optional_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) else None


def _optional_object(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    return value if isinstance(value, dict) else None


@dataclass(frozen=True, slots=True)
class Message:
    """One delivered message (a PUSH body, or an entry of a SYNC_RESULT).

    ``kind`` is ``chat`` (1:1), ``group`` or ``system``; system messages come from
    the sender ``system`` and usually carry ``data``, a JSON object such as
    ``{"type": "friend_request", "from": "alice"}``.
    """

    msg_id: str
    conv_id: str
    seq: int
    sender: str
    to: str | None
    group_id: str | None
    kind: str
    text: str
    ts: int
    client_msg_id: str | None
    data: dict[str, Any] | None = None

    @property
    def is_system(self) -> bool:
        return self.kind == "system"

    @property
    def data_type(self) -> str | None:
        """``data["type"]`` of a system message (``friend_request``, ...), if any."""
        value = (self.data or {}).get("type")
        return value if isinstance(value, str) else None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Message:
        """Parse a push-shaped JSON object; raises ClientError if a required field is bad."""
        return cls(
            msg_id=_text(body, "msg_id"),
            conv_id=_text(body, "conv_id"),
            seq=_int(body, "seq"),
            sender=_text(body, "from"),
            to=_optional_text(body, "to"),
            group_id=_optional_text(body, "group_id"),
            kind=_optional_text(body, "kind") or "chat",
            text=_optional_text(body, "text") or "",
            ts=_int(body, "ts"),
            client_msg_id=_optional_text(body, "client_msg_id"),
            data=_optional_object(body, "data"),
        )

    def to_json(self) -> dict[str, Any]:
        """The wire shape again (``sender`` is called ``from`` there)."""
        return {
            "msg_id": self.msg_id,
            "conv_id": self.conv_id,
            "seq": self.seq,
            "from": self.sender,
            "to": self.to,
            "group_id": self.group_id,
            "kind": self.kind,
            "text": self.text,
            "data": self.data,
            "ts": self.ts,
            "client_msg_id": self.client_msg_id,
        }


@dataclass(frozen=True, slots=True)
class Ack:
    """The server's SEND_ACK: the message is sequenced and durable."""

    msg_id: str
    conv_id: str
    seq: int
    ts: int
    client_msg_id: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Ack:
        return cls(
            msg_id=_text(body, "msg_id"),
            conv_id=_text(body, "conv_id"),
            seq=_int(body, "seq"),
            ts=_int(body, "ts"),
            client_msg_id=_text(body, "client_msg_id"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "msg_id": self.msg_id,
            "conv_id": self.conv_id,
            "seq": self.seq,
            "ts": self.ts,
            "client_msg_id": self.client_msg_id,
        }


@dataclass(frozen=True, slots=True)
class SyncPage:
    """One SYNC_RESULT: messages with ``seq > after_seq``, ascending."""

    conv_id: str
    messages: list[Message]
    has_more: bool

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> SyncPage:
        raw = body.get("messages")
        if not isinstance(raw, list):
            raise ClientError("SYNC_RESULT without a messages list")
        messages = [Message.from_body(item) for item in raw if isinstance(item, dict)]
        return cls(_text(body, "conv_id"), messages, bool(body.get("has_more")))


@dataclass(frozen=True, slots=True)
class Session:
    """What LOGIN_ACK told us about this connection."""

    user: str
    device: str
    session_id: str
    connector_id: str
    heartbeat_interval_s: float
    heartbeat_timeout_s: float
    max_frame_bytes: int

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Session:
        def seconds(key: str, default: float) -> float:
            value = body.get(key)
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
            return float(value) if ok else default  # type: ignore[arg-type]

        max_frame = body.get("max_frame_bytes")
        return cls(
            user=_text(body, "user"),
            device=_optional_text(body, "device") or "default",
            session_id=_optional_text(body, "session_id") or "",
            connector_id=_optional_text(body, "connector_id") or "",
            heartbeat_interval_s=seconds("heartbeat_interval_s", 20.0),
            heartbeat_timeout_s=seconds("heartbeat_timeout_s", 60.0),
            max_frame_bytes=max_frame if isinstance(max_frame, int) and max_frame > 0 else 65536,
        )
