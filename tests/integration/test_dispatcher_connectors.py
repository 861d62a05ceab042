"""The dispatcher with real connector processes: a connector killed with -9 stops being
handed out once its announcement's TTL runs out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from store.register import RegisterStore

CONNECTOR_TTL_S = 2
KEEPALIVE_S = 0.5


@pytest.fixture
async def register(settings: Settings) -> AsyncIterator[RegisterStore]:
    redis = Redis.from_url(settings.redis_url)
    yield RegisterStore(redis, settings)
    await redis.aclose()


async def test_connector_killed_with_9_disappears_within_its_ttl(
    launch,  # type: ignore[no-untyped-def]
    port: Callable[[], int],
    register: RegisterStore,
    unique: Callable[[str], str],
) -> None:
    dispatcher_port = port()
    base_url = f"http://127.0.0.1:{dispatcher_port}"
    launch(
        "dispatcher",
        name="dispatcher",
        env={"IM_DISPATCHER_PORT": str(dispatcher_port)},
        health_url=f"{base_url}/healthz",
    )
    connectors = {}
    for _ in range(2):
        connector_id, tcp_port, http_port = unique("conn"), port(), port()
        connectors[connector_id] = (
            launch(
                "connector",
                name=connector_id,
                env={
                    "IM_CONNECTOR_ID": connector_id,
                    "IM_CONNECTOR_PORT": str(tcp_port),
                    "IM_CONNECTOR_HTTP_PORT": str(http_port),
                    "IM_CONNECTOR_TTL_S": str(CONNECTOR_TTL_S),
                    "IM_CONNECTOR_KEEPALIVE_S": str(KEEPALIVE_S),
                },
                health_url=f"http://127.0.0.1:{http_port}/healthz",
            ),
            tcp_port,
        )

    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        user, password = unique("user"), "a good password"
        await http.post("/v1/users", json={"user_id": user, "password": password})
        token = (
            await http.post("/v1/tokens", json={"user_id": user, "password": password})
        ).json()["token"]

        async def ask(*exclude: str) -> httpx.Response:
            others = {c.connector_id for c in await register.live_connectors()} - set(connectors)
            skip = ",".join(sorted(others | set(exclude)))
            return await http.get(
                "/v1/connector",
                params={"exclude": skip} if skip else None,
                headers={"Authorization": f"Bearer {token}"},
            )

        async def assigned() -> str:
            response = await ask()
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["port"] == connectors[body["connector_id"]][1]
            return str(body["connector_id"])

        # Both are handed out (two empty connectors tie; ties are broken at random).
        seen: set[str] = set()
        for _ in range(50):
            seen.add(await assigned())
            if seen == set(connectors):
                break
        assert seen == set(connectors)

        victim, survivor = sorted(connectors)
        connectors[victim][0].kill()

        # Nothing refreshes the victim's announcement any more: asked without the
        # survivor, the dispatcher answers the victim until its TTL runs out, then 503.
        deadline = time.monotonic() + CONNECTOR_TTL_S + KEEPALIVE_S + 10
        while (await ask(survivor)).status_code == 200:
            assert time.monotonic() < deadline, f"{victim} still handed out after its TTL"
            await asyncio.sleep(0.2)
        assert (await ask(survivor)).status_code == 503
        for _ in range(10):
            assert await assigned() == survivor
