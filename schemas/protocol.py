"""Wire protocol v1: length-prefixed frames with a fixed binary header and a JSON body.

Every frame is a 16-byte big-endian header followed by a UTF-8 JSON body::

    offset size field
    0      4    packet_len   u32  header + body, in bytes
    4      2    header_len   u16  always 16 in v1
    6      2    version      u16  always 1 in v1
    8      4    op           u32  see :class:`Op`
    12     4    request_id   u32  chosen by the requester, echoed in the reply

This module is the only place that knows these offsets; docs/protocol.md
specifies the same thing for third-party clients.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from schemas.errors import ErrorCode, ProtocolError

HEADER = struct.Struct(">IHHII")
HEADER_LEN = HEADER.size  # 16
VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 64 * 1024


class Op(IntEnum):
    """Operation codes; a request and its reply are paired (odd, even)."""

    LOGIN = 1
    LOGIN_ACK = 2
    HEARTBEAT = 3
    HEARTBEAT_ACK = 4
    SEND = 5
    SEND_ACK = 6
    PUSH = 7  # server -> client
    PUSH_ACK = 8  # client -> server
    SYNC = 9
    SYNC_RESULT = 10
    LOGOUT = 11
    KICK = 12  # server -> client, the server ends the session
    ERROR = 13  # server -> client


KNOWN_OPS = frozenset(int(op) for op in Op)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: the op, the request id and the parsed JSON body."""

    op: int
    request_id: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Header:
    packet_len: int
    header_len: int
    version: int
    op: int
    request_id: int

    @property
    def body_len(self) -> int:
        return self.packet_len - self.header_len


def encode(op: int, body: dict[str, Any] | None = None, request_id: int = 0) -> bytes:
    """Encode one frame; the body is serialised as compact UTF-8 JSON."""
    payload = orjson.dumps(body if body is not None else {})
    return (
        HEADER.pack(HEADER_LEN + len(payload), HEADER_LEN, VERSION, int(op), request_id) + payload
    )


def encode_error(code: ErrorCode, message: str, request_id: int = 0) -> bytes:
    """An ERROR frame carrying a code and a human-readable message."""
    return encode(Op.ERROR, {"code": int(code), "message": message}, request_id)


def parse_header(raw: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Header:
    """Parse and validate a 16-byte header before any of the body is read.

    Raises :class:`ProtocolError` with ``fatal=True`` when the stream can no
    longer be trusted (bad lengths, wrong version, oversized frame).
    """
    if len(raw) != HEADER_LEN:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "short header", fatal=True)
    header = Header(*HEADER.unpack(raw))
    if header.header_len != HEADER_LEN:
        raise ProtocolError(
            ErrorCode.MALFORMED_FRAME, f"header_len must be {HEADER_LEN}", fatal=True
        )
    if header.version != VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {header.version} is not supported (want {VERSION})",
            request_id=header.request_id,
            fatal=True,
        )
    if header.packet_len < HEADER_LEN:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "packet_len below header size", fatal=True)
    if header.packet_len > max_frame_bytes:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE,
            f"frame of {header.packet_len} bytes exceeds the limit of {max_frame_bytes}",
            request_id=header.request_id,
            fatal=True,
        )
    return header


def parse_body(header: Header, payload: bytes) -> Frame:
    """Decode a frame's JSON body; a bad body is not fatal (the framing held)."""
    if header.op not in KNOWN_OPS:
        raise ProtocolError(
            ErrorCode.UNKNOWN_OP, f"unknown op {header.op}", request_id=header.request_id
        )
    if not payload:
        body: Any = {}
    else:
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise ProtocolError(
                ErrorCode.BAD_JSON, "body is not valid UTF-8 JSON", request_id=header.request_id
            ) from None
    if not isinstance(body, dict):
        raise ProtocolError(
            ErrorCode.BAD_JSON, "body must be a JSON object", request_id=header.request_id
        )
    return Frame(header.op, header.request_id, body)


def decode(data: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Frame:
    """Decode exactly one complete frame from ``data``."""
    header = parse_header(data[:HEADER_LEN], max_frame_bytes)
    if len(data) != header.packet_len:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "packet_len does not match data", fatal=True)
    return parse_body(header, data[HEADER_LEN:])


async def read_frame(
    reader: asyncio.StreamReader, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> Frame:
    """Read one frame from a stream.

    Raises ``asyncio.IncompleteReadError`` at end of stream and
    :class:`ProtocolError` for a bad frame (``fatal`` says whether to close).
    """
    header = parse_header(await reader.readexactly(HEADER_LEN), max_frame_bytes)
    payload = await reader.readexactly(header.body_len) if header.body_len else b""
    return parse_body(header, payload)
