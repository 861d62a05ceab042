"""Frame bodies the connector reads and writes: validation of requests, shapes of replies.

Pure functions (no I/O) so the contract with clients can be unit-tested on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from schemas.conversations import ID_PATTERN
from schemas.errors import ErrorCode, ImError
from schemas.protocol import Op, encode
from schemas.records import StoredMessage

DEFAULT_DEVICE = "default"
MAX_DEVICE_LEN = 64
MAX_CLIENT_MSG_ID_LEN = 128
MAX_ACK_IDS = 1000
_ID = re.compile(ID_PATTERN)


@dataclass(frozen=True, slots=True)
class LoginRequest:
    token: str
    device: str


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A send to one user (``to``) or to a group (``group_id``): exactly one is set."""

    client_msg_id: str
    to: str | None
    text: str
    client_ts: int | None
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class SyncRequest:
    conv_id: str
    after_seq: int
    limit: int


def bad_request(message: str, request_id: int) -> ImError:
    return ImError(ErrorCode.BAD_REQUEST, message, request_id=request_id)


def _is_int(value: Any) -> bool:
    # bool is an int in Python but not in anyone's JSON schema.
    return isinstance(value, int) and not isinstance(value, bool)


def parse_login(body: dict[str, Any], request_id: int) -> LoginRequest:
    """``{"token": str, "device": str (optional)}``."""
    token = body.get("token")
    if not isinstance(token, str) or not token:
        raise bad_request("login needs a token string", request_id)
    device = body.get("device", DEFAULT_DEVICE)
    if not isinstance(device, str) or not 1 <= len(device) <= MAX_DEVICE_LEN:
        raise bad_request(f"device must be a string of 1-{MAX_DEVICE_LEN} chars", request_id)
    return LoginRequest(token=token, device=device)


def parse_send(body: dict[str, Any], request_id: int, max_text_chars: int) -> SendRequest:
    """``{"client_msg_id": str, "to": user_id | "group_id": group_id, "text": str,
    "client_ts": int ms (optional)}``."""
    client_msg_id = body.get("client_msg_id")
    if not isinstance(client_msg_id, str) or not 1 <= len(client_msg_id) <= MAX_CLIENT_MSG_ID_LEN:
        raise bad_request(
            f"client_msg_id must be a string of 1-{MAX_CLIENT_MSG_ID_LEN} chars", request_id
        )
    to, group_id = body.get("to"), body.get("group_id")
    if (to is None) == (group_id is None):
        raise bad_request("a send needs exactly one of to and group_id", request_id)
    if to is not None and (not isinstance(to, str) or not _ID.match(to)):
        raise bad_request("to must be a user id", request_id)
    if group_id is not None and (not isinstance(group_id, str) or not _ID.match(group_id)):
        raise bad_request("group_id must be a group id", request_id)
    text = body.get("text")
    if not isinstance(text, str) or not text:
        raise bad_request("text must be a non-empty string", request_id)
    if len(text) > max_text_chars:
        raise bad_request(f"text longer than {max_text_chars} chars", request_id)
    client_ts = body.get("client_ts")
    if client_ts is not None and not (_is_int(client_ts) and client_ts >= 0):
        raise bad_request("client_ts must be a non-negative integer (ms)", request_id)
    return SendRequest(
        client_msg_id=client_msg_id, to=to, text=text, client_ts=client_ts, group_id=group_id
    )


def parse_sync(body: dict[str, Any], request_id: int, page_size: int) -> SyncRequest:
    """``{"conv_id": str, "after_seq": int >= 0, "limit": 1..page_size (optional)}``."""
    conv_id = body.get("conv_id")
    if not isinstance(conv_id, str) or not conv_id:
        raise bad_request("conv_id must be a string", request_id)
    after_seq = body.get("after_seq", 0)
    if not _is_int(after_seq) or after_seq < 0:
        raise bad_request("after_seq must be an integer >= 0", request_id)
    limit = body.get("limit", page_size)
    if not _is_int(limit) or not 1 <= limit <= page_size:
        raise bad_request(f"limit must be an integer in 1..{page_size}", request_id)
    return SyncRequest(conv_id=conv_id, after_seq=after_seq, limit=limit)


def parse_push_ack(body: dict[str, Any], request_id: int) -> list[str]:
    """``{"msg_ids": [str, ...]}``."""
    msg_ids = body.get("msg_ids")
    if (
        not isinstance(msg_ids, list)
        or len(msg_ids) > MAX_ACK_IDS
        or not all(isinstance(m, str) and m for m in msg_ids)
    ):
        raise bad_request(f"msg_ids must be a list of up to {MAX_ACK_IDS} strings", request_id)
    return msg_ids


def message_body(message: StoredMessage) -> dict[str, Any]:
    """A message as clients see it, in PUSH frames and SYNC results."""
    return {
        "msg_id": message.msg_id,
        "conv_id": message.conv_id,
        "seq": message.seq,
        "from": message.sender,
        "to": message.to,
        "group_id": message.group_id,
        "kind": message.kind,
        "text": message.text,
        "data": message.data,
        "ts": message.ts,
        "client_msg_id": message.client_msg_id,
    }


def push_frame(message: StoredMessage) -> bytes:
    return encode(Op.PUSH, message_body(message))


def error_frame(code: int, message: str, request_id: int = 0) -> bytes:
    """ERROR frame; ``code`` may be any int (results from the logic carry plain ints)."""
    return encode(Op.ERROR, {"code": int(code), "message": message}, request_id)


def kick_frame(reason: str, reconnect: bool) -> bytes:
    return encode(Op.KICK, {"reason": reason, "reconnect": reconnect})
