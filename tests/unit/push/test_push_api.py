"""The push service's HTTP contract without services: keys, rate limit, spec, push ids."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from config.settings import Settings
from push.app import create_app
from push.openapi import SPEC_PATH, current_spec
from push.publisher import new_push_id, stable_push_id

KEYS = "key-one,key-two"


def _client(rate_per_s: float = 100.0) -> httpx.AsyncClient:
    # No lifespan: these requests are all refused before any Kafka, Redis or MySQL work.
    app = create_app(Settings(push_service_keys=KEYS, push_rate_per_s=rate_per_s))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://push")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with _client() as client:
        yield client


def test_committed_openapi_spec_is_current() -> None:
    committed = json.loads(SPEC_PATH.read_text())
    assert committed == current_spec(), (
        "docs/openapi/push.json is stale: run `python -m push.openapi`"
    )


def test_spec_documents_the_key_and_its_errors() -> None:
    spec = current_spec()
    for path in ("/v1/push/users", "/v1/push/groups/{group_id}", "/v1/push/broadcast"):
        operation = spec["paths"][path]["post"]
        assert {"202", "400", "401", "429"} <= set(operation["responses"])
        assert "422" not in operation["responses"]
        assert "X-Service-Key" in [p["name"] for p in operation["parameters"]]
    assert "404" in spec["paths"]["/v1/push/groups/{group_id}"]["post"]["responses"]


@pytest.mark.parametrize("path", ["/v1/push/users", "/v1/push/groups/team", "/v1/push/broadcast"])
@pytest.mark.parametrize("headers", [{}, {"X-Service-Key": "wrong"}, {"X-Service-Key": ""}])
async def test_a_missing_or_unknown_key_is_a_401(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    response = await client.post(path, json={"text": "hi", "user_ids": ["a"]}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"code": 2000, "message": "missing or unknown X-Service-Key"}


async def test_a_bad_body_is_a_400_naming_the_field(client: httpx.AsyncClient) -> None:
    key = {"X-Service-Key": "key-one"}
    for body, field in [
        ({"user_ids": [], "text": "hi"}, "user_ids"),
        ({"user_ids": ["not valid!"], "text": "hi"}, "user_ids"),
        ({"user_ids": ["bob"], "text": ""}, "text"),
    ]:
        response = await client.post("/v1/push/users", json=body, headers=key)
        assert response.status_code == 400, body
        assert response.json()["code"] == 1005 and field in response.json()["message"]


async def test_each_key_has_its_own_rate_limit() -> None:
    async with _client(rate_per_s=1) as client:
        # The bad body is refused after the key spent its token: no services needed.
        first = await client.post(
            "/v1/push/broadcast", json={}, headers={"X-Service-Key": "key-one"}
        )
        assert first.status_code == 400
        second = await client.post(
            "/v1/push/broadcast", json={}, headers={"X-Service-Key": "key-one"}
        )
        assert second.status_code == 429
        assert second.json()["code"] == 1009
        assert int(second.headers["Retry-After"]) >= 1
        other = await client.post(
            "/v1/push/broadcast", json={}, headers={"X-Service-Key": "key-two"}
        )
        assert other.status_code == 400


def test_push_ids() -> None:
    assert new_push_id() != new_push_id()
    same = stable_push_id("friend_request", "alice", "bob", "2026-01-01T00:00:00.123000")
    assert same == stable_push_id("friend_request", "alice", "bob", "2026-01-01T00:00:00.123000")
    assert same != stable_push_id("friend_request", "bob", "alice", "2026-01-01T00:00:00.123000")
    assert len(f"{same}:{'u' * 64}") <= 128  # fits a client_msg_id
