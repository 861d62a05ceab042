"""The push service through the whole pipeline: system messages to users, groups and everyone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import httpx

from client.messages import Message
from client.sdk import Client
from schemas import conversations

if TYPE_CHECKING:
    from tests.integration.conftest import Pipeline

PASSWORD = "correct horse battery staple"
SERVICE_KEY = {"X-Service-Key": "local-push-key"}


@contextlib.asynccontextmanager
async def online(pipeline: Pipeline, name: str, connector: int) -> AsyncIterator[Client]:
    client = Client(
        name,
        PASSWORD,
        dispatcher_url=pipeline.dispatcher_url,
        address=pipeline.connectors[connector].address,
    )
    await client.register()
    await client.fetch_token()
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


async def next_message(client: Client) -> Message:
    async with asyncio.timeout(30.0):
        return await client.receive()


async def test_broadcast_reaches_every_online_user_on_both_connectors(
    pipeline: Pipeline, unique: Callable[[str], str]
) -> None:
    push_url = pipeline.start_push()
    names = [unique("u") for _ in range(4)]
    async with (
        online(pipeline, names[0], 0) as first,
        online(pipeline, names[1], 0) as second,
        online(pipeline, names[2], 1) as third,
        online(pipeline, names[3], 1) as fourth,
        httpx.AsyncClient(base_url=push_url, timeout=30) as http,
    ):
        answer = await http.post(
            "/v1/push/broadcast", json={"text": "maintenance at noon"}, headers=SERVICE_KEY
        )
        assert answer.status_code == 202, answer.text
        got = await asyncio.gather(*(next_message(c) for c in (first, second, third, fourth)))
    print(f"broadcast: online users=4 received={len(got)}")
    assert {m.text for m in got} == {"maintenance at noon"}
    assert {m.conv_id for m in got} == {conversations.BROADCAST}
    assert {m.kind for m in got} == {"system"}
    assert len({m.msg_id for m in got}) == 1


async def test_system_message_to_an_offline_user_arrives_at_login_with_its_data(
    pipeline: Pipeline, unique: Callable[[str], str]
) -> None:
    push_url = pipeline.start_push()
    name = unique("offline")
    account = Client(name, PASSWORD, dispatcher_url=pipeline.dispatcher_url)
    await account.register()
    await account.close(logout=False)
    async with httpx.AsyncClient(base_url=push_url, timeout=30) as http:
        answer = await http.post(
            "/v1/push/users",
            json={"user_ids": [name], "text": "welcome", "data": {"type": "welcome"}},
            headers=SERVICE_KEY,
        )
        assert answer.status_code == 202, answer.text
        refused = await http.post(
            "/v1/push/users",
            json={"user_ids": [name], "text": "x"},
            headers={"X-Service-Key": "nope"},
        )
        assert refused.status_code == 401
    client = Client(name, PASSWORD, dispatcher_url=pipeline.dispatcher_url)
    await client.fetch_token()
    await client.connect()
    try:
        message = await next_message(client)
    finally:
        await client.close()
    assert (message.conv_id, message.kind, message.text) == (
        conversations.system(name),
        "system",
        "welcome",
    )
    assert message.data == {"type": "welcome"}
