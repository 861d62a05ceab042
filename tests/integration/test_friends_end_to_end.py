"""Friend notices through the whole pipeline: dispatcher → msg topic → logic → connector → user.

A user who is offline when asked finds the request at the next login; the asker,
online, gets the acceptance pushed live. Real processes, topics of this test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx

from schemas.conversations import system
from schemas.protocol import Frame, Op, encode, read_frame

PASSWORD = "a good password"
RECV_TIMEOUT_S = 30.0


async def open_session(port: int, token: str) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode(Op.LOGIN, {"token": token, "device": "phone"}, 1))
    ack = await next_frame(reader, Op.LOGIN_ACK)
    assert ack.request_id == 1
    return reader, writer


async def next_frame(reader: asyncio.StreamReader, op: int) -> Frame:
    async with asyncio.timeout(RECV_TIMEOUT_S):
        while True:
            frame = await read_frame(reader, 16 * 1024 * 1024)
            if frame.op == op:
                return frame


async def test_friend_request_reaches_an_offline_user_at_login(
    launch,  # type: ignore[no-untyped-def]
    port: Callable[[], int],
    unique: Callable[[str], str],
) -> None:
    tag = unique("friends")
    env = {
        "IM_MSG_TOPIC": f"im.msg.{tag}",
        "IM_PERSIST_TOPIC": f"im.persist.{tag}",
        "IM_PUSH_TOPIC_PREFIX": f"im.push.{tag}.",
        "IM_MSG_PARTITIONS": "2",
    }
    api_port, tcp_port, http_port, web_port = port(), port(), port(), port()
    api = f"http://127.0.0.1:{api_port}"
    launch(
        "dispatcher", env={**env, "IM_DISPATCHER_PORT": str(api_port)}, health_url=f"{api}/healthz"
    )
    launch(
        "connector",
        env={
            **env,
            "IM_CONNECTOR_ID": unique("conn"),
            "IM_CONNECTOR_PORT": str(tcp_port),
            "IM_CONNECTOR_HTTP_PORT": str(http_port),
        },
        health_url=f"http://127.0.0.1:{http_port}/healthz",
    )
    launch(
        "stream_logic",
        env={**env, "IM_LOGIC_APP_ID": f"mmim-logic-{tag}", "IM_LOGIC_WEB_PORT": str(web_port)},
        health_url=f"http://127.0.0.1:{web_port}/healthz",
        timeout=120,
    )

    writers: list[Any] = []
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        tokens = {}
        alice, bob = unique("alice"), unique("bob")
        for user in (alice, bob):
            await http.post("/v1/users", json={"user_id": user, "password": PASSWORD})
            issued = await http.post("/v1/tokens", json={"user_id": user, "password": PASSWORD})
            tokens[user] = issued.json()["token"]

        alice_reader, alice_writer = await open_session(tcp_port, tokens[alice])
        writers.append(alice_writer)
        try:
            # Bob is offline when alice asks.
            asked = await http.post(
                "/v1/friends/requests",
                json={"user_id": bob},
                headers={"Authorization": f"Bearer {tokens[alice]}"},
            )
            assert asked.status_code == 202

            bob_reader, bob_writer = await open_session(tcp_port, tokens[bob])
            writers.append(bob_writer)
            request = await next_frame(bob_reader, Op.PUSH)
            assert (request.body["kind"], request.body["from"]) == ("system", "system")
            assert request.body["conv_id"] == system(bob) and request.body["to"] == bob
            assert alice in request.body["text"]
            bob_writer.write(encode(Op.PUSH_ACK, {"msg_ids": [request.body["msg_id"]]}, 2))

            accepted = await http.post(
                f"/v1/friends/requests/{alice}/accept",
                headers={"Authorization": f"Bearer {tokens[bob]}"},
            )
            assert accepted.status_code == 200
            # Alice is online: the acceptance is pushed to her live.
            notice = await next_frame(alice_reader, Op.PUSH)
            assert (notice.body["kind"], notice.body["conv_id"]) == ("system", system(alice))
            assert bob in notice.body["text"] and "accepted" in notice.body["text"]
        finally:
            for writer in writers:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
