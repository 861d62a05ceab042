"""The push service as a real process on the real stack.

What it accepted is read back from the msg topic (a topic of this test's own), as
the stream logic would read it: one system message per user, one into a group's
conversation, one broadcast.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from config.settings import Settings
from schemas.conversations import BROADCAST, group, system
from schemas.records import ClientMessage, decode_client_message
from store.groups import GroupStore
from store.mysql import close_pool, create_pool
from tests.integration.conftest import create_topic

KEY = "push-test-key"


async def read_topic(
    settings: Settings, name: str, count: int, within_s: float = 20
) -> list[tuple[bytes, ClientMessage]]:
    """The first ``count`` records of the topic (key, message), or fewer after ``within_s``."""
    consumer = AIOKafkaConsumer(
        name,
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: list[tuple[bytes, ClientMessage]] = []
    try:
        deadline = time.monotonic() + within_s
        while len(found) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                found += [(r.key, decode_client_message(r.value)) for r in records]
    finally:
        await consumer.stop()
    return found


def start_push(launch, port: Callable[[], int], **env: str) -> str:  # type: ignore[no-untyped-def]
    http_port = port()
    url = f"http://127.0.0.1:{http_port}"
    launch(
        "push",
        name="push",
        env={"IM_PUSH_PORT": str(http_port), "IM_PUSH_SERVICE_KEYS": f"{KEY},other-key", **env},
        health_url=f"{url}/healthz",
    )
    return url


@pytest.fixture
async def groups(settings: Settings) -> AsyncIterator[GroupStore]:
    redis = Redis.from_url(settings.redis_url)
    pool = await create_pool(settings, maxsize=2)
    yield GroupStore(pool, redis)
    await close_pool(pool)
    await redis.aclose()


async def test_pushes_reach_the_msg_topic_as_system_messages(
    launch,  # type: ignore[no-untyped-def]
    port: Callable[[], int],
    settings: Settings,
    groups: GroupStore,
    unique: Callable[[str], str],
) -> None:
    topic = unique("test.push.msg")
    await create_topic(settings, topic, 2)
    url = start_push(launch, port, IM_MSG_TOPIC=topic)
    ann, ben = unique("ann"), unique("ben")
    team = await groups.create("Team", ann)
    key = {"X-Service-Key": KEY}

    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        to_users = await http.post(
            "/v1/push/users",
            json={"user_ids": [ann, ben, ann], "text": "maintenance at 2am", "data": {"n": 1}},
            headers=key,
        )
        assert to_users.status_code == 202
        assert to_users.json()["recipients"] == 2
        to_group = await http.post(
            f"/v1/push/groups/{team.group_id}", json={"text": "welcome"}, headers=key
        )
        assert to_group.status_code == 202
        everyone = await http.post("/v1/push/broadcast", json={"text": "hello all"}, headers=key)
        assert everyone.status_code == 202
        no_group = await http.post(
            f"/v1/push/groups/{unique('nogroup')}", json={"text": "x"}, headers=key
        )
        assert no_group.status_code == 404 and no_group.json()["code"] == 2006

    push_ids = [r.json()["push_id"] for r in (to_users, to_group, everyone)]
    assert len(set(push_ids)) == 3
    found = await read_topic(settings, topic, 4)
    by_conv = {message.conv_id: (key, message) for key, message in found}
    assert len(found) == 4 and set(by_conv) == {
        system(ann),
        system(ben),
        group(team.group_id),
        BROADCAST,
    }
    for conv_id, (record_key, message) in by_conv.items():
        assert record_key == conv_id.encode()  # keyed by conversation, like chat messages
        assert (message.kind, message.sender, message.reply_connector) == ("system", "system", None)
    for user in (ann, ben):
        message = by_conv[system(user)][1]
        assert (message.to, message.text, message.data) == (user, "maintenance at 2am", {"n": 1})
        assert message.client_msg_id == f"{push_ids[0]}:{user}"
    in_group = by_conv[group(team.group_id)][1]
    assert (in_group.group_id, in_group.text, in_group.client_msg_id) == (
        team.group_id,
        "welcome",
        push_ids[1],
    )
    assert by_conv[BROADCAST][1].text == "hello all"


async def test_bad_keys_are_401_and_each_key_is_rate_limited(
    launch,  # type: ignore[no-untyped-def]
    port: Callable[[], int],
    settings: Settings,
    unique: Callable[[str], str],
) -> None:
    topic = unique("test.push.msg")
    await create_topic(settings, topic, 2)
    url = start_push(launch, port, IM_MSG_TOPIC=topic, IM_PUSH_RATE_PER_S="0.2")
    body = {"user_ids": [unique("cat")], "text": "hi"}

    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        for headers in ({}, {"X-Service-Key": "not-a-key"}):
            refused = await http.post("/v1/push/users", json=body, headers=headers)
            assert refused.status_code == 401
            assert refused.json()["code"] == 2000

        first = await http.post("/v1/push/users", json=body, headers={"X-Service-Key": KEY})
        assert first.status_code == 202
        limited = await http.post("/v1/push/users", json=body, headers={"X-Service-Key": KEY})
        assert limited.status_code == 429
        assert limited.json()["code"] == 1009
        assert int(limited.headers["Retry-After"]) >= 5  # one token per 5 s
        # Another caller's key is not held back by this one's.
        other = await http.post("/v1/push/users", json=body, headers={"X-Service-Key": "other-key"})
        assert other.status_code == 202

    # Only the two accepted pushes are in the pipeline.
    found = await read_topic(settings, topic, 3, within_s=5)
    assert [message.client_msg_id.split(":")[0] for _, message in found] == [
        first.json()["push_id"],
        other.json()["push_id"],
    ]
