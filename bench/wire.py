"""A lean protocol session for load generation: login, send, read acks and pushes.

The SDK (client/) retries, dedups and reconnects; a load generator needs none
of that and must not be the bottleneck, so it speaks the wire protocol
directly with the codec from schemas.protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from client.sdk import ACK_BATCH_MAX
from schemas.protocol import HEADER_LEN, Frame, Op, encode, parse_body, parse_header, read_frame

# Acks are batched the way the SDK batches them (client/sdk.py): sent 20 ms
# after the first unacked push, or at once when ACK_BATCH_MAX are pending.
ACK_DELAY_S = 0.02
READ_BYTES = 1 << 16

PushHandler = Callable[[dict[str, Any], int], None]
AckHandler = Callable[[dict[str, Any], int], None]


class WireSession:
    """One logged-in connection; callbacks get each SEND_ACK / PUSH with its arrival time."""

    def __init__(self, host: str, port: int, source_host: str | None = None) -> None:
        self.host = host
        self.port = port
        self.source_host = source_host
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.request_id = 0
        self.on_push: PushHandler | None = None
        self.on_ack: AckHandler | None = None
        self.errors: list[dict[str, Any]] = []
        self._reader_task: asyncio.Task[None] | None = None
        self._pending_push_acks: list[str] = []
        self._ack_timer: asyncio.TimerHandle | None = None

    def next_request_id(self) -> int:
        self.request_id = (self.request_id + 1) & 0xFFFFFFFF or 1
        return self.request_id

    async def connect(self) -> None:
        local = (self.source_host, 0) if self.source_host else None
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, local_addr=local, limit=1 << 20
        )

    async def login(self, token: str, device: str = "bench") -> dict[str, Any]:
        """Log in and return the LOGIN_ACK body (raises on an ERROR frame)."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            encode(Op.LOGIN, {"token": token, "device": device}, self.next_request_id())
        )
        frame = await read_frame(self.reader)
        if frame.op != Op.LOGIN_ACK:
            raise RuntimeError(f"login refused: {frame.body}")
        return frame.body

    def start_reading(self) -> None:
        self._reader_task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        # Whatever one read returns is split into frames here: two readexactly
        # awaits per frame cost the generator more CPU than the frames' handling
        # (at group rates each process takes ~12,000 pushes/s).
        assert self.reader is not None
        pending = bytearray()
        try:
            while True:
                chunk = await self.reader.read(READ_BYTES)
                if not chunk:
                    return
                now_ns = time.time_ns()
                pending += chunk
                start = 0
                while len(pending) - start >= HEADER_LEN:
                    header = parse_header(bytes(pending[start : start + HEADER_LEN]), 1 << 20)
                    end = start + header.packet_len
                    if end > len(pending):
                        break
                    self._on_frame(
                        parse_body(header, bytes(pending[start + HEADER_LEN : end])), now_ns
                    )
                    start = end
                del pending[:start]
        except (ConnectionError, asyncio.CancelledError):
            return

    def _on_frame(self, frame: Frame, now_ns: int) -> None:
        if frame.op == Op.PUSH:
            if self.on_push:
                self.on_push(frame.body, now_ns)
            self._pending_push_acks.append(frame.body["msg_id"])
            if len(self._pending_push_acks) >= ACK_BATCH_MAX:
                self.flush_push_acks()
            elif self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(
                    ACK_DELAY_S, self.flush_push_acks
                )
        elif frame.op == Op.SEND_ACK:
            if self.on_ack:
                self.on_ack(frame.body, now_ns)
        elif frame.op == Op.ERROR:
            self.errors.append(frame.body)

    def _cancel_ack_timer(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None

    def flush_push_acks(self) -> None:
        self._cancel_ack_timer()
        if self._pending_push_acks and self.writer is not None and not self.writer.is_closing():
            self.writer.write(encode(Op.PUSH_ACK, {"msg_ids": self._pending_push_acks}))
            self._pending_push_acks = []

    def send(self, to: str, text: str, client_msg_id: str) -> None:
        """Queue a SEND (no await: the open-loop scheduler must not wait on the socket)."""
        assert self.writer is not None
        self.writer.write(
            encode(
                Op.SEND,
                {"client_msg_id": client_msg_id, "to": to, "text": text},
                self.next_request_id(),
            )
        )

    def send_group(self, group_id: str, text: str, client_msg_id: str) -> None:
        assert self.writer is not None
        self.writer.write(
            encode(
                Op.SEND,
                {"client_msg_id": client_msg_id, "group_id": group_id, "text": text},
                self.next_request_id(),
            )
        )

    def heartbeat(self) -> None:
        if self.writer is not None:
            self.writer.write(encode(Op.HEARTBEAT, {}, self.next_request_id()))

    async def close(self) -> None:
        self._cancel_ack_timer()
        if self._reader_task:
            self._reader_task.cancel()
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
