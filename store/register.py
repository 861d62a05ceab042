"""The register store in Redis: where users are connected, which connectors live, revoked tokens.

Keys (docs/architecture.md):

- ``route:{user}`` hash device → ``"{connector_id}|{session_id}"``; the key's TTL is
  refreshed by the holding connector, so a crashed connector's routes expire.
- ``connector:{id}`` hash host, port, connections, capacity, ts; TTL ``IM_CONNECTOR_TTL_S``
  refreshed by the connector's keepalive.
- ``connectors`` set of connector ids; a member whose hash expired is dead.
- ``revoked:{jti}`` string with TTL = the token's remaining life.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis

from config.settings import Settings
from schemas.errors import AuthError, ErrorCode
from store.pipelined_scripts import ScriptPipeline

ROUTE_PREFIX = "route:"
CONNECTOR_PREFIX = "connector:"
CONNECTORS_KEY = "connectors"
REVOKED_PREFIX = "revoked:"

T = TypeVar("T")

# Routes outlive a few missed refreshes but not a dead connector for long.
ROUTE_TTL_HEARTBEATS = 3
# Pipelines are cut into chunks so one call never builds a huge request.
PIPELINE_CHUNK = 1000

# Delete the device's field only while it still names this session: a stale
# disconnect must not remove the route of a newer login of the same device.
_UNBIND_IF_SAME_SESSION = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
local sep = string.find(value, '|', 1, true)
if sep and string.sub(value, sep + 1) == ARGV[2] then
    return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

# Point a device at a session and return what it pointed at, in one round trip;
# given a login token's revocation key (KEYS[2]), only if that token is not
# revoked, so a revoked token never binds. Reply: {1, false} when revoked, else
# {0, previous}.
_BIND_SESSION = """
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return {1, false} end
local previous = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {0, previous}
"""

# Every route hash named in KEYS, as flat field/value lists, in one call: for a
# group's members this replaces hundreds of HGETALLs whose per-reply handling
# in redis-py was most of the fan-out's time spent on routes.
_ROUTES_OF = """
local found = {}
for i, key in ipairs(KEYS) do found[i] = redis.call('HGETALL', key) end
return found
"""

# Drop index members whose liveness hash expired, atomically per member so a
# connector that re-announced in between is kept.
_FORGET_IF_EXPIRED = """
local removed = 0
for i, id in ipairs(ARGV) do
    if redis.call('EXISTS', KEYS[1] .. id) == 0 then
        removed = removed + redis.call('SREM', KEYS[2], id)
    end
end
return removed
"""


@dataclass(frozen=True)
class SessionRoute:
    """One logged-in device of a user: the connector holding it and its session id."""

    user: str
    device: str
    connector_id: str
    session_id: str


@dataclass(frozen=True)
class BindRequest:
    """One login to bind: the device, the session taking it, the token's id if checked."""

    user: str
    device: str
    connector_id: str
    session_id: str
    unless_revoked: str | None = None


@dataclass(frozen=True)
class ConnectorInfo:
    """What a connector announces about itself: address and load."""

    connector_id: str
    host: str
    port: int
    connections: int
    capacity: int
    ts_ms: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _route_value(connector_id: str, session_id: str) -> str:
    return f"{connector_id}|{session_id}"


def _parse_route(user: str, device: Any, value: Any) -> SessionRoute | None:
    connector_id, sep, session_id = _text(value).partition("|")
    if not sep:
        return None
    return SessionRoute(user, _text(device), connector_id, session_id)


def _parse_routes(user: str, fields: dict[Any, Any]) -> list[SessionRoute]:
    routes = (_parse_route(user, device, value) for device, value in fields.items())
    return sorted((r for r in routes if r is not None), key=lambda r: r.device)


def _parse_connector(connector_id: str, fields: dict[Any, Any]) -> ConnectorInfo | None:
    data = {_text(k): _text(v) for k, v in fields.items()}
    try:
        return ConnectorInfo(
            connector_id=connector_id,
            host=data["host"],
            port=int(data["port"]),
            connections=int(data["connections"]),
            capacity=int(data["capacity"]),
            ts_ms=int(data["ts"]),
        )
    except (KeyError, ValueError):
        return None


def _chunks(items: list[T], size: int = PIPELINE_CHUNK) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RegisterStore:
    """All of the register store's Redis keys, read and written in one place."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.route_ttl_s = max(10, math.ceil(settings.heartbeat_timeout_s * ROUTE_TTL_HEARTBEATS))
        self._bind = redis.register_script(_BIND_SESSION)
        self._unbind = redis.register_script(_UNBIND_IF_SAME_SESSION)
        self._forget_expired = redis.register_script(_FORGET_IF_EXPIRED)
        self._routes_of = redis.register_script(_ROUTES_OF)

    # --- user routes

    async def bind_session(
        self,
        user: str,
        device: str,
        connector_id: str,
        session_id: str,
        unless_revoked: str | None = None,
    ) -> SessionRoute | None:
        """Point ``user``'s ``device`` at this session; return the route it replaced, if any.

        ``unless_revoked``: the login token's id; if that token is revoked nothing
        is bound and ``AuthError(TOKEN_REVOKED)`` is raised (checked and bound
        atomically, in the same round trip).
        """
        request = BindRequest(user, device, connector_id, session_id, unless_revoked)
        (outcome,) = await self.bind_many([request])
        if isinstance(outcome, AuthError):
            raise outcome
        return outcome

    async def bind_many(
        self, requests: Sequence[BindRequest]
    ) -> list[SessionRoute | AuthError | None]:
        """:meth:`bind_session` for many logins in one round trip.

        Per request, in order: the route it replaced (or None), or the
        ``AuthError`` of a revoked token (that request bound nothing).
        """
        batch = ScriptPipeline(self.redis)
        for request in requests:
            keys = [ROUTE_PREFIX + request.user]
            if request.unless_revoked is not None:
                keys.append(REVOKED_PREFIX + request.unless_revoked)
            value = _route_value(request.connector_id, request.session_id)
            batch.call(self._bind, keys, [request.device, value, self.route_ttl_s])
        outcomes: list[SessionRoute | AuthError | None] = []
        for request, (revoked, previous) in zip(requests, await batch.execute(), strict=True):
            if int(revoked):
                outcomes.append(AuthError(ErrorCode.TOKEN_REVOKED, "token revoked"))
            elif previous is None:
                outcomes.append(None)
            else:
                outcomes.append(_parse_route(request.user, request.device, previous))
        return outcomes

    async def touch_routes(self, users: Iterable[str]) -> None:
        """Refresh the TTL of these users' route keys (the holder is still alive)."""
        for chunk in _chunks(list(users)):
            async with self.redis.pipeline(transaction=False) as pipe:
                for user in chunk:
                    pipe.expire(ROUTE_PREFIX + user, self.route_ttl_s)
                await pipe.execute()

    async def unbind_session(self, user: str, device: str, session_id: str) -> bool:
        """Delete the device's route only if it still points at ``session_id``."""
        removed = await self._unbind(keys=[ROUTE_PREFIX + user], args=[device, session_id])
        return bool(removed)

    async def unbind_many(self, sessions: Iterable[tuple[str, str, str]]) -> int:
        """:meth:`unbind_session` for many ``(user, device, session_id)``, pipelined."""
        removed = 0
        for chunk in _chunks(list(sessions)):
            batch = ScriptPipeline(self.redis)
            for user, device, session_id in chunk:
                batch.call(self._unbind, [ROUTE_PREFIX + user], [device, session_id])
            removed += sum(int(n) for n in await batch.execute())
        return removed

    async def routes(self, user: str) -> list[SessionRoute]:
        """Every device of ``user`` with a route, sorted by device."""
        return _parse_routes(user, await self.redis.hgetall(ROUTE_PREFIX + user))

    async def routes_many(self, users: Iterable[str]) -> dict[str, list[SessionRoute]]:
        """Routes of several users in one round trip; users with none map to []."""
        wanted = list(dict.fromkeys(users))
        if not wanted:
            return {}
        batch = ScriptPipeline(self.redis)
        chunks = list(_chunks(wanted))
        for chunk in chunks:
            batch.call(self._routes_of, [ROUTE_PREFIX + user for user in chunk], [])
        found: dict[str, list[SessionRoute]] = {}
        for chunk, hashes in zip(chunks, await batch.execute(), strict=True):
            for user, flat in zip(chunk, hashes, strict=True):
                found[user] = _parse_routes(user, dict(zip(flat[::2], flat[1::2], strict=True)))
        return found

    # --- connectors

    async def announce_connector(self, info: ConnectorInfo, ttl_s: float) -> None:
        """Publish (or refresh) a connector's address and load, alive for ``ttl_s``."""
        key = CONNECTOR_PREFIX + info.connector_id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "host": info.host,
                    "port": info.port,
                    "connections": info.connections,
                    "capacity": info.capacity,
                    "ts": info.ts_ms,
                },
            )
            pipe.pexpire(key, max(1, int(ttl_s * 1000)))
            pipe.sadd(CONNECTORS_KEY, info.connector_id)
            await pipe.execute()

    async def withdraw_connector(self, connector_id: str) -> None:
        """Remove a connector at once (draining): the dispatcher stops handing it out."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(CONNECTOR_PREFIX + connector_id)
            pipe.srem(CONNECTORS_KEY, connector_id)
            await pipe.execute()

    async def live_connectors(self) -> list[ConnectorInfo]:
        """Connectors whose liveness key has not expired, sorted by id; forgets dead ones."""
        ids = sorted(_text(member) for member in await self.redis.smembers(CONNECTORS_KEY))
        live: list[ConnectorInfo] = []
        dead: list[str] = []
        for chunk in _chunks(ids):
            async with self.redis.pipeline(transaction=False) as pipe:
                for connector_id in chunk:
                    pipe.hgetall(CONNECTOR_PREFIX + connector_id)
                results = await pipe.execute()
            for connector_id, fields in zip(chunk, results, strict=True):
                info = _parse_connector(connector_id, fields) if fields else None
                if info is None:
                    dead.append(connector_id)
                else:
                    live.append(info)
        if dead:
            await self._forget_expired(keys=[CONNECTOR_PREFIX, CONNECTORS_KEY], args=dead)
        return live

    async def alive_connectors(self, ids: Iterable[str]) -> set[str]:
        """The subset of ``ids`` whose liveness key still exists."""
        wanted = list(dict.fromkeys(ids))
        alive: set[str] = set()
        for chunk in _chunks(wanted):
            async with self.redis.pipeline(transaction=False) as pipe:
                for connector_id in chunk:
                    pipe.exists(CONNECTOR_PREFIX + connector_id)
                results = await pipe.execute()
            alive.update(cid for cid, exists in zip(chunk, results, strict=True) if exists)
        return alive

    # --- tokens

    async def revoke_token(self, jti: str, ttl_s: float) -> None:
        """Mark a token id revoked for the rest of its life (at least one second)."""
        await self.redis.set(REVOKED_PREFIX + jti, "1", ex=max(1, math.ceil(ttl_s)))

    async def is_revoked(self, jti: str) -> bool:
        """Whether the token id was revoked (and has not yet expired anyway)."""
        return bool(await self.redis.exists(REVOKED_PREFIX + jti))
