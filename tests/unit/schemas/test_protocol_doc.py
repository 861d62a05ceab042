"""docs/protocol.md must agree with the code: hex dumps, op codes, error codes, limits."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from config.settings import Settings
from schemas.errors import ErrorCode
from schemas.protocol import Op, decode, encode

DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"

# The example frames shown in the doc, as (op, request_id, body).
EXAMPLES: dict[str, tuple[Op, int, dict[str, Any]]] = {
    "login": (Op.LOGIN, 1, {"token": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln", "device": "phone"}),
    "send": (
        Op.SEND,
        2,
        {"client_msg_id": "a1b2c3", "to": "bob", "text": "hi bob", "client_ts": 1700000000000},
    ),
    "heartbeat": (Op.HEARTBEAT, 3, {}),
}


def hexdump(data: bytes) -> str:
    """``hexdump -C`` style: offset, 16 bytes in two groups of 8, printable ASCII."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {left:<23}  {right:<23}  |{text}|")
    return "\n".join(lines)


def doc_dumps() -> dict[str, str]:
    pattern = re.compile(r"<!-- frame: (\w+) -->\s*```text\n(.*?)\n```", re.DOTALL)
    return {name: block for name, block in pattern.findall(DOC.read_text())}


def test_every_hex_dump_in_the_doc_is_what_encode_produces() -> None:
    dumps = doc_dumps()
    assert set(dumps) == set(EXAMPLES)
    for name, (op, request_id, body) in EXAMPLES.items():
        assert dumps[name] == hexdump(encode(op, body, request_id)), name


def test_the_hex_dumps_decode_back_to_the_documented_frames() -> None:
    for name, block in doc_dumps().items():
        data = bytes.fromhex("".join(line[10:58].replace(" ", "") for line in block.splitlines()))
        op, request_id, body = EXAMPLES[name]
        frame = decode(data)
        assert (frame.op, frame.request_id, frame.body) == (op, request_id, body)


def test_the_doc_lists_every_op_and_every_error_code() -> None:
    text = DOC.read_text()
    for op in Op:
        assert re.search(rf"\|\s*{op.value}\s*\|\s*`{op.name}`", text), op.name
    for code in ErrorCode:
        assert re.search(rf"\|\s*{code.value}\s*\|\s*`{code.name}`", text), code.name


def test_the_doc_states_the_default_limits() -> None:
    text = DOC.read_text()
    defaults = Settings()
    assert f"{defaults.max_frame_bytes} bytes" in text
    assert f"{defaults.heartbeat_interval_s:g} s" in text
    assert f"{defaults.heartbeat_timeout_s:g} s" in text
    assert f"{defaults.login_timeout_s:g} s" in text
    assert f"{defaults.send_rate_per_s:g} frames/s" in text
    assert f"burst {defaults.send_burst}" in text


def test_the_push_table_lists_every_field_the_connector_sends() -> None:
    from connector.frames import message_body
    from schemas.records import StoredMessage

    stored = StoredMessage(
        msg_id="m", conv_id="s:bob", seq=1, sender="system", text="t", ts=1, client_msg_id="c"
    )
    section = DOC.read_text().split("### PUSH (7)")[1].split("### SYNC (9)")[0]
    for key in message_body(stored):
        assert re.search(rf"\|\s*`{key}`\s*\|", section), key
    for conv_id in ("p:<a>:<b>", "g:<group_id>", "s:<user>", "broadcast"):
        assert f"| `{conv_id}` |" in section, conv_id
