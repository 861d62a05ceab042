"""The dispatcher as a real process on the real stack: users, tokens, connector assignment.

Live connectors are announced through the register store's own contract
(``RegisterStore.announce_connector``), exactly as a connector process does. Other
tests may have connectors live on the same stack, so every request excludes the
live connectors this test did not announce.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable

import httpx
import pytest
from redis.asyncio import Redis

from auth.tokens import TokenService
from config.settings import Settings
from store.login_attempts import address_key
from store.register import ConnectorInfo, RegisterStore


def _launch_dispatcher(  # type: ignore[no-untyped-def]
    launch, port: Callable[[], int], name: str, env: dict[str, str]
) -> str:
    """Start a dispatcher process on a free port; its base URL."""
    http_port = port()
    url = f"http://127.0.0.1:{http_port}"
    launch(
        "dispatcher",
        name=name,
        env={"IM_DISPATCHER_PORT": str(http_port), **env},
        health_url=f"{url}/healthz",
    )
    return url


@pytest.fixture
def dispatcher_url(launch, port: Callable[[], int]) -> str:  # type: ignore[no-untyped-def]
    return _launch_dispatcher(launch, port, "dispatcher", {})


@pytest.fixture
async def http(dispatcher_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=dispatcher_url, timeout=10) as client:
        yield client


@pytest.fixture
async def register(settings: Settings) -> AsyncIterator[RegisterStore]:
    redis = Redis.from_url(settings.redis_url)
    yield RegisterStore(redis, settings)
    await redis.aclose()


@pytest.fixture
async def announced(register: RegisterStore) -> AsyncIterator[list[str]]:
    """Ids of connectors this test announces; withdrawn at the end."""
    ids: list[str] = []
    yield ids
    for connector_id in ids:
        await register.withdraw_connector(connector_id)


async def _announce(
    register: RegisterStore,
    announced: list[str],
    connector_id: str,
    connections: int,
    *,
    port: int,
    capacity: int = 100,
    ttl_s: float = 60,
) -> None:
    info = ConnectorInfo(
        connector_id, "127.0.0.1", port, connections, capacity, int(time.time() * 1000)
    )
    await register.announce_connector(info, ttl_s)
    announced.append(connector_id)


async def _token_for(http: httpx.AsyncClient, unique: Callable[[str], str]) -> str:
    user, password = unique("user"), "a good password"
    assert (await http.post("/v1/users", json={"user_id": user, "password": password})).is_success
    response = await http.post("/v1/tokens", json={"user_id": user, "password": password})
    assert response.status_code == 200
    return str(response.json()["token"])


async def _ask_connector(
    http: httpx.AsyncClient,
    register: RegisterStore,
    token: str,
    mine: Iterable[str],
    exclude: Iterable[str] = (),
) -> httpx.Response:
    """GET /v1/connector as a client would, ignoring other tests' live connectors."""
    others = {c.connector_id for c in await register.live_connectors()} - set(mine)
    skip = ",".join(sorted(others | set(exclude)))
    return await http.get(
        "/v1/connector",
        params={"exclude": skip} if skip else None,
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_health(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_registration(http: httpx.AsyncClient, unique: Callable[[str], str]) -> None:
    user = unique("alice")
    created = await http.post("/v1/users", json={"user_id": user, "password": "alice's secret"})
    assert created.status_code == 201
    assert created.json() == {"user_id": user}

    again = await http.post("/v1/users", json={"user_id": user, "password": "other secret"})
    assert again.status_code == 409
    assert again.json()["code"] == 2004

    bad_id = await http.post("/v1/users", json={"user_id": "no spaces!", "password": "long enough"})
    assert bad_id.status_code == 400
    assert bad_id.json()["code"] == 1005
    assert "user_id" in bad_id.json()["message"]

    short = await http.post("/v1/users", json={"user_id": unique("bob"), "password": "short"})
    assert short.status_code == 400
    assert short.json()["code"] == 1005
    assert "password" in short.json()["message"]


async def test_wrong_passwords_lock_the_user_s_password_logins_with_a_429(
    launch,  # type: ignore[no-untyped-def]
    port: Callable[[], int],
    unique: Callable[[str], str],
) -> None:
    url = _launch_dispatcher(launch, port, "strict", {"IM_LOGIN_FAILURES_PER_USER": "2"})
    user, password = unique("dave"), "dave's secret"
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        await http.post("/v1/users", json={"user_id": user, "password": password})
        for guess in ("123456", "password"):
            wrong = await http.post("/v1/tokens", json={"user_id": user, "password": guess})
            assert wrong.status_code == 401
        # Even the right password waits now: it is not checked until the window ends.
        locked = await http.post("/v1/tokens", json={"user_id": user, "password": password})
        assert locked.status_code == 429
        assert locked.json() == {
            "code": 1009,
            "message": "too many failed logins for this user; retry later",
        }
        assert 1 <= int(locked.headers["retry-after"]) <= 900


async def test_one_address_gets_a_429_past_its_login_attempts_a_minute(
    launch,  # type: ignore[no-untyped-def]
    port: Callable[[], int],
    redis: Redis,
    unique: Callable[[str], str],
) -> None:
    url = _launch_dispatcher(launch, port, "strict", {"IM_LOGIN_ATTEMPTS_PER_IP_PER_MIN": "3"})
    await redis.delete(address_key("127.0.0.1"))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            body = {"user_id": unique("erin"), "password": "not registered"}
            for _ in range(3):
                assert (await http.post("/v1/tokens", json=body)).status_code == 401
            refused = await http.post("/v1/tokens", json=body)
            assert refused.status_code == 429
            assert "address" in refused.json()["message"]
            assert 1 <= int(refused.headers["retry-after"]) <= 60
    finally:
        await redis.delete(address_key("127.0.0.1"))


async def test_login(
    http: httpx.AsyncClient, settings: Settings, unique: Callable[[str], str]
) -> None:
    user = unique("carol")
    await http.post("/v1/users", json={"user_id": user, "password": "carol's secret"})

    good = await http.post("/v1/tokens", json={"user_id": user, "password": "carol's secret"})
    assert good.status_code == 200
    body = good.json()
    claims = await TokenService(settings).verify(body["token"])
    assert claims.user == user
    assert body["expires_at"] == claims.expires_at > time.time()

    wrong = await http.post("/v1/tokens", json={"user_id": user, "password": "not her secret"})
    unknown = await http.post(
        "/v1/tokens", json={"user_id": unique("nobody"), "password": "carol's secret"}
    )
    for refused in (wrong, unknown):
        assert refused.status_code == 401
        assert refused.json()["code"] == 2003
    # Same answer either way: the response does not reveal which user ids exist.
    assert wrong.json() == unknown.json()


async def test_connector_needs_a_valid_token(
    http: httpx.AsyncClient, settings: Settings, unique: Callable[[str], str]
) -> None:
    missing = await http.get("/v1/connector")
    assert missing.status_code == 401
    assert missing.json()["code"] == 2000

    garbage = await http.get("/v1/connector", headers={"Authorization": "Bearer not.a.token"})
    assert garbage.status_code == 401
    assert garbage.json()["code"] == 2000

    long_ago = time.time() - 2 * settings.token_ttl_s
    expired = TokenService(settings, clock=lambda: long_ago).issue(unique("erin")).token
    stale = await http.get("/v1/connector", headers={"Authorization": f"Bearer {expired}"})
    assert stale.status_code == 401
    assert stale.json()["code"] == 2001


async def test_logout_revokes_the_token(
    http: httpx.AsyncClient, register: RegisterStore, unique: Callable[[str], str]
) -> None:
    token, other = await _token_for(http, unique), await _token_for(http, unique)
    auth = {"Authorization": f"Bearer {token}"}

    assert (await http.delete("/v1/tokens/current", headers=auth)).status_code == 204

    refused = await http.get("/v1/connector", headers=auth)
    assert refused.status_code == 401
    assert refused.json()["code"] == 2002
    again = await http.delete("/v1/tokens/current", headers=auth)
    assert again.status_code == 401
    assert again.json()["code"] == 2002
    # The connector's login check (same TokenService, same register) refuses it too.
    assert await register.is_revoked(TokenService(register.settings).decode(token).jti)
    # Another session's token is untouched (200, or 503 if no connector is live).
    still_valid = await http.get("/v1/connector", headers={"Authorization": f"Bearer {other}"})
    assert still_valid.status_code != 401


async def test_least_loaded_live_connector_is_handed_out(
    http: httpx.AsyncClient,
    register: RegisterStore,
    settings: Settings,
    announced: list[str],
    unique: Callable[[str], str],
) -> None:
    light, heavy, full = unique("light"), unique("heavy"), unique("full")
    await _announce(register, announced, light, 10, port=7701)
    await _announce(register, announced, heavy, 50, port=7702)
    await _announce(register, announced, full, 100, port=7703)
    token = await _token_for(http, unique)

    first = await _ask_connector(http, register, token, announced)
    assert first.status_code == 200
    assert first.json() == {
        "connector_id": light,
        "host": "127.0.0.1",
        "port": 7701,
        "backoff": {
            "initial_ms": settings.reconnect_backoff_initial_ms,
            "max_ms": settings.reconnect_backoff_max_ms,
            "multiplier": 2.0,
            "jitter": 0.5,
        },
    }

    # A client that could not reach `light` asks again without it.
    second = await _ask_connector(http, register, token, announced, exclude=[light])
    assert second.status_code == 200
    assert second.json()["connector_id"] == heavy

    # Only the full one left: nobody to hand out.
    none = await _ask_connector(http, register, token, announced, exclude=[light, heavy])
    assert none.status_code == 503
    assert none.json()["code"] == 5000
    assert int(none.headers["retry-after"]) >= 1

    # Load changes are followed: `heavy` empties out and becomes the better choice.
    await _announce(register, announced, heavy, 0, port=7702)
    assert (await _ask_connector(http, register, token, announced)).json()["connector_id"] == heavy


async def test_connector_whose_announcement_expired_is_no_longer_handed_out(
    http: httpx.AsyncClient,
    register: RegisterStore,
    announced: list[str],
    unique: Callable[[str], str],
) -> None:
    dying, steady = unique("dying"), unique("steady")
    ttl_s = 1.0
    # `dying` stops refreshing its announcement, as a connector killed with -9 would.
    await _announce(register, announced, dying, 0, port=7801, ttl_s=ttl_s)
    await _announce(register, announced, steady, 60, port=7802)
    token = await _token_for(http, unique)

    first = await _ask_connector(http, register, token, [dying, steady])
    assert first.json()["connector_id"] == dying

    deadline = time.monotonic() + ttl_s + 10
    while True:
        answer = await _ask_connector(http, register, token, [dying, steady])
        if answer.json()["connector_id"] == steady:
            break
        assert time.monotonic() < deadline, f"{dying} still handed out long after its TTL"
        await asyncio.sleep(0.2)
    for _ in range(3):
        answer = await _ask_connector(http, register, token, [dying, steady])
        assert answer.json()["connector_id"] == steady
