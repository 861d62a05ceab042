"""The bench's wire session splits whatever a read returns into frames, and acks like the SDK."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.wire import WireSession
from schemas.protocol import Op, encode, read_frame


async def test_frames_split_across_reads_are_each_handled_once_and_acked_together() -> None:
    pushes = [encode(Op.PUSH, {"msg_id": f"m{i}", "seq": i}) for i in range(3)]
    ack = encode(Op.SEND_ACK, {"client_msg_id": "c1", "seq": 9}, 7)
    stream = b"".join([*pushes, ack])
    acked: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cut inside a header and inside a body, so frames straddle reads.
        for piece in (stream[:7], stream[7:40], stream[40:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        frame = await read_frame(reader)
        acked.set_result({"op": frame.op, **frame.body})
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    session = WireSession("127.0.0.1", port)
    got_pushes: list[dict[str, Any]] = []
    got_acks: list[dict[str, Any]] = []
    session.on_push = lambda body, now_ns: got_pushes.append(body)
    session.on_ack = lambda body, now_ns: got_acks.append(body)
    await session.connect()
    session.start_reading()
    try:
        expected = {"op": Op.PUSH_ACK, "msg_ids": ["m0", "m1", "m2"]}
        assert await asyncio.wait_for(acked, 5) == expected
        assert [p["msg_id"] for p in got_pushes] == ["m0", "m1", "m2"]
        assert got_acks == [{"client_msg_id": "c1", "seq": 9}]
    finally:
        await session.close()
        server.close()
        await server.wait_closed()
