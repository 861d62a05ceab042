"""The one JSON error shape of the HTTP services: backend failures and rate limits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pymysql.err import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from schemas.errors import ErrorCode, RateLimitedError
from schemas.http import install_error_handlers
from store.backend_errors import BACKEND_ERRORS


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app, retry_after_s=3, unavailable=BACKEND_ERRORS)

    @app.get("/redis-down")
    async def redis_down() -> None:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:16379")

    @app.get("/mysql-down")
    async def mysql_down() -> None:
        raise OperationalError(2003, "Can't connect to MySQL server")

    @app.get("/throttled")
    async def throttled() -> None:
        raise RateLimitedError(ErrorCode.RATE_LIMITED, "slow down", retry_after_s=42)

    @app.get("/bug")
    async def bug() -> None:
        raise KeyError("not a backend")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        yield http


@pytest.mark.parametrize("path", ["/redis-down", "/mysql-down"])
async def test_a_failed_backend_is_a_503_to_retry_not_a_500(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 503
    assert response.json() == {"code": 5000, "message": "service unavailable, retry later"}
    assert response.headers["retry-after"] == "3"


async def test_a_rate_limit_says_its_own_retry_after(client: httpx.AsyncClient) -> None:
    response = await client.get("/throttled")
    assert response.status_code == 429
    assert response.json() == {"code": 1009, "message": "slow down"}
    assert response.headers["retry-after"] == "42"


async def test_anything_else_is_still_a_500_without_details(client: httpx.AsyncClient) -> None:
    response = await client.get("/bug")
    assert response.status_code == 500
    assert response.json() == {"code": 5001, "message": "internal error"}
