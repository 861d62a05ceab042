"""Property tests of the wire codec (schemas.protocol): what any peer can throw at it."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.errors import ErrorCode, ProtocolError
from schemas.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    HEADER_LEN,
    KNOWN_OPS,
    VERSION,
    Frame,
    Op,
    decode,
    encode,
    encode_error,
    parse_header,
    read_frame,
)

request_ids = st.integers(min_value=0, max_value=2**32 - 1)
known_ops = st.sampled_from(sorted(KNOWN_OPS))
unknown_ops = st.integers(min_value=0, max_value=2**32 - 1).filter(lambda op: op not in KNOWN_OPS)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=8)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(coro: Any) -> Any:
    """Run a coroutine on a private loop (these tests are sync for hypothesis)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def read_all(data: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> list[Frame]:
    """Feed ``data`` then EOF to a StreamReader and read frames until it raises."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames: list[Frame] = []
    while True:
        frames.append(await read_frame(reader, max_frame_bytes))


@FAST
@given(op=known_ops, request_id=request_ids, body=json_objects)
def test_any_frame_round_trips(op: int, request_id: int, body: dict[str, Any]) -> None:
    data = encode(op, body, request_id)
    assert decode(data, max_frame_bytes=len(data)) == Frame(op, request_id, body)


@FAST
@given(op=known_ops, request_id=request_ids, body=json_objects)
def test_header_describes_the_frame_exactly(op: int, request_id: int, body: dict[str, Any]) -> None:
    data = encode(op, body, request_id)
    packet_len, header_len, version, wire_op, wire_request_id = struct.unpack(">IHHII", data[:16])
    assert (packet_len, header_len, version) == (len(data), 16, 1)
    assert (wire_op, wire_request_id) == (op, request_id)


@FAST
@given(frames=st.lists(st.tuples(known_ops, request_ids, json_objects), max_size=5))
def test_back_to_back_frames_come_out_of_a_stream_in_order(
    frames: list[tuple[int, int, dict[str, Any]]],
) -> None:
    data = b"".join(encode(op, body, rid) for op, rid, body in frames)

    async def scenario() -> list[Frame]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        got = [await read_frame(reader, max_frame_bytes=1 << 24) for _ in frames]
        with pytest.raises(asyncio.IncompleteReadError):
            await read_frame(reader)
        return got

    assert run(scenario()) == [Frame(op, rid, body) for op, rid, body in frames]


@FAST
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_decode_to_a_frame_or_a_protocol_error(data: bytes) -> None:
    try:
        frame = decode(data)
    except ProtocolError as error:
        assert isinstance(error.code, ErrorCode)
    else:
        assert isinstance(frame.body, dict)


@FAST
@given(op=st.integers(0, 2**32 - 1), request_id=request_ids, payload=st.binary(max_size=200))
def test_any_payload_behind_a_valid_header_is_a_frame_or_a_non_fatal_error(
    op: int, request_id: int, payload: bytes
) -> None:
    data = HEADER.pack(HEADER_LEN + len(payload), HEADER_LEN, VERSION, op, request_id) + payload
    try:
        frame = decode(data)
    except ProtocolError as error:
        # The framing held, so the connection can go on after an ERROR frame.
        assert not error.fatal
        assert error.code in (ErrorCode.UNKNOWN_OP, ErrorCode.BAD_JSON)
        assert error.request_id == request_id
    else:
        assert frame.op in KNOWN_OPS and isinstance(frame.body, dict)


@FAST
@given(data=st.binary(max_size=400))
def test_a_stream_of_arbitrary_bytes_only_raises_protocol_or_incomplete_read(data: bytes) -> None:
    async def scenario() -> None:
        try:
            await read_all(data)
        except (ProtocolError, asyncio.IncompleteReadError):
            return

    run(scenario())


@FAST
@given(
    frames=st.lists(st.tuples(known_ops, request_ids, json_objects), min_size=1, max_size=3),
    garbage=st.binary(max_size=100),
)
def test_valid_frames_followed_by_garbage_are_read_then_fail_cleanly(
    frames: list[tuple[int, int, dict[str, Any]]], garbage: bytes
) -> None:
    data = b"".join(encode(op, body, rid) for op, rid, body in frames) + garbage

    async def scenario() -> list[Frame]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        got = [await read_frame(reader, max_frame_bytes=1 << 24) for _ in frames]
        try:
            while True:
                await read_frame(reader, max_frame_bytes=1 << 24)
        except (ProtocolError, asyncio.IncompleteReadError):
            pass
        return got

    assert run(scenario()) == [Frame(op, rid, body) for op, rid, body in frames]


@FAST
@given(
    excess=st.integers(min_value=1, max_value=2**32 - 1 - DEFAULT_MAX_FRAME_BYTES),
    op=st.integers(0, 2**32 - 1),
    request_id=request_ids,
)
def test_an_oversized_frame_is_refused_from_its_header_alone(
    excess: int, op: int, request_id: int
) -> None:
    header = HEADER.pack(DEFAULT_MAX_FRAME_BYTES + excess, HEADER_LEN, VERSION, op, request_id)

    async def scenario() -> ProtocolError:
        reader = asyncio.StreamReader()
        reader.feed_data(header)  # no body and no EOF: reading the body would hang
        try:
            await asyncio.wait_for(read_frame(reader), 5)
        except ProtocolError as error:
            return error
        raise AssertionError("oversized frame was accepted")

    error = run(scenario())
    assert error.code == ErrorCode.FRAME_TOO_LARGE and error.fatal
    assert error.request_id == request_id


@FAST
@given(
    header_len=st.integers(0, 2**16 - 1).filter(lambda n: n != HEADER_LEN),
    version=st.integers(0, 2**16 - 1),
)
def test_a_wrong_header_len_is_fatal(header_len: int, version: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_header(HEADER.pack(HEADER_LEN, header_len, version, Op.HEARTBEAT, 7))
    assert caught.value.fatal and caught.value.code == ErrorCode.MALFORMED_FRAME


@FAST
@given(version=st.integers(0, 2**16 - 1).filter(lambda v: v != VERSION), request_id=request_ids)
def test_another_version_is_refused_with_its_request_id(version: int, request_id: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_header(HEADER.pack(HEADER_LEN, HEADER_LEN, version, Op.LOGIN, request_id))
    assert caught.value.code == ErrorCode.UNSUPPORTED_VERSION
    assert caught.value.fatal and caught.value.request_id == request_id


@FAST
@given(packet_len=st.integers(0, HEADER_LEN - 1))
def test_a_packet_len_below_the_header_is_fatal(packet_len: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_header(HEADER.pack(packet_len, HEADER_LEN, VERSION, Op.HEARTBEAT, 1))
    assert caught.value.fatal and caught.value.code == ErrorCode.MALFORMED_FRAME


@FAST
@given(op=unknown_ops, request_id=request_ids)
def test_an_unknown_op_is_a_non_fatal_error_echoing_the_request(op: int, request_id: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(encode(op, {}, request_id))
    assert caught.value.code == ErrorCode.UNKNOWN_OP
    assert not caught.value.fatal and caught.value.request_id == request_id


@FAST
@given(body=json_values.filter(lambda value: not isinstance(value, dict)))
def test_a_body_that_is_not_an_object_is_bad_json(body: Any) -> None:
    import orjson

    payload = orjson.dumps(body)
    data = HEADER.pack(HEADER_LEN + len(payload), HEADER_LEN, VERSION, Op.SEND, 9) + payload
    with pytest.raises(ProtocolError) as caught:
        decode(data, max_frame_bytes=1 << 24)
    assert caught.value.code == ErrorCode.BAD_JSON and not caught.value.fatal


def test_an_empty_body_is_an_empty_object() -> None:
    data = HEADER.pack(HEADER_LEN, HEADER_LEN, VERSION, Op.HEARTBEAT, 3)
    assert decode(data) == Frame(Op.HEARTBEAT, 3, {})


def test_a_truncated_frame_is_fatal() -> None:
    data = encode(Op.SEND, {"text": "hello"}, 1)
    with pytest.raises(ProtocolError) as caught:
        decode(data[:-1])
    assert caught.value.fatal


def test_invalid_utf8_in_the_body_is_bad_json() -> None:
    payload = b'{"text": "\xff"}'
    data = HEADER.pack(HEADER_LEN + len(payload), HEADER_LEN, VERSION, Op.SEND, 4) + payload
    with pytest.raises(ProtocolError) as caught:
        decode(data)
    assert caught.value.code == ErrorCode.BAD_JSON and caught.value.request_id == 4


@FAST
@given(code=st.sampled_from(list(ErrorCode)), message=st.text(max_size=100), rid=request_ids)
def test_error_frames_carry_code_and_message(code: ErrorCode, message: str, rid: int) -> None:
    frame = decode(encode_error(code, message, rid))
    assert frame == Frame(Op.ERROR, rid, {"code": int(code), "message": message})
