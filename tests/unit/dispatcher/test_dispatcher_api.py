"""The dispatcher's HTTP contract without services: error shapes and the published spec."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from config.settings import Settings
from dispatcher.app import create_app
from dispatcher.openapi import SPEC_PATH, current_spec


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # No lifespan: these requests are all refused before any Redis or MySQL work.
    transport = httpx.ASGITransport(app=create_app(Settings()), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://dispatcher") as client:
        yield client


def test_committed_openapi_spec_is_current() -> None:
    committed = json.loads(SPEC_PATH.read_text())
    assert committed == current_spec(), (
        "docs/openapi/dispatcher.json is stale: run `python -m dispatcher.openapi`"
    )


def test_spec_documents_our_400_not_fastapis_422() -> None:
    spec = current_spec()
    for path in spec["paths"].values():
        for operation in path.values():
            assert "422" not in operation["responses"]
    assert "400" in spec["paths"]["/v1/users"]["post"]["responses"]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"user_id": "bad id!", "password": "long enough"}, "user_id"),
        ({"user_id": "p:alice:bob", "password": "long enough"}, "user_id"),
        ({"user_id": "x" * 65, "password": "long enough"}, "user_id"),
        ({"user_id": "alice", "password": "short"}, "password"),
        ({"user_id": "alice", "password": "x" * 257}, "password"),
        ({"user_id": "alice"}, "password"),
        ({"password": "long enough"}, "user_id"),
        ({"user_id": 5, "password": "long enough"}, "user_id"),
    ],
)
async def test_bad_registration_is_a_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], mentions: str
) -> None:
    response = await client.post("/v1/users", json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == 1005
    assert mentions in error["message"]


async def test_body_that_is_not_json_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/tokens", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"code": 1005, "message": "request body is not valid JSON"}


async def test_unknown_path_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nope")
    assert response.status_code == 404
    assert response.json()["code"] == 2006


async def test_wrong_method_is_a_json_405(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/users")
    assert response.status_code == 405
    assert response.json()["code"] == 1005


async def test_connector_without_token_is_a_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/connector")
    assert response.status_code == 401
    assert response.json()["code"] == 2000
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_unexpected_failure_is_a_json_500_without_details(client: httpx.AsyncClient) -> None:
    # Without its lifespan the app has no database: the handler fails unexpectedly.
    response = await client.post(
        "/v1/tokens", json={"user_id": "alice", "password": "alice's password"}
    )
    assert response.status_code == 500
    assert response.json() == {"code": 5001, "message": "internal error"}
