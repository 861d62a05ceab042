"""The dispatcher's HTTP API as the client sees it: users, tokens, connector lookup,
groups and friends (docs/openapi/dispatcher.json).

The only module of the client that talks HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from client.backoff import Backoff
from client.errors import (
    AuthFailed,
    DispatcherError,
    DispatcherUnreachable,
    LoginRateLimited,
    NoConnectorAvailable,
    RequestRefused,
    ServiceUnavailable,
    UserExists,
)
from schemas.errors import ErrorCode

DEFAULT_DISPATCHER_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: Any


@dataclass(frozen=True, slots=True)
class ConnectorAddress:
    """The connector the dispatcher picked, and how to back off when it fails."""

    connector_id: str
    host: str
    port: int
    backoff: Backoff


@dataclass(frozen=True, slots=True)
class Group:
    """A group; ``role`` is the caller's (``admin`` or ``member``) where the answer says."""

    group_id: str
    name: str
    owner: str
    role: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"group_id": self.group_id, "name": self.name, "owner": self.owner}
        if self.role is not None:
            data["role"] = self.role
        return data


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    role: str  # admin or member

    def to_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "role": self.role}


@dataclass(frozen=True, slots=True)
class Friendship:
    """Where a friendship with ``user_id`` stands: ``pending`` or ``accepted``."""

    user_id: str
    status: str

    def to_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "status": self.status}


@dataclass(frozen=True, slots=True)
class FriendList:
    """Friends, requests waiting for the caller's answer, and the caller's open requests."""

    friends: list[str]
    incoming: list[str]
    outgoing: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"friends": self.friends, "incoming": self.incoming, "outgoing": self.outgoing}


def _path(segment: str) -> str:
    """A user or group id as one URL path segment (the server validates the id)."""
    return quote(segment, safe="")


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _group(data: Any) -> Group:
    try:
        role = data.get("role")
        return Group(
            group_id=str(data["group_id"]),
            name=str(data["name"]),
            owner=str(data["owner"]),
            role=role if isinstance(role, str) else None,
        )
    except (AttributeError, KeyError, TypeError) as error:
        raise DispatcherError(f"unexpected group answer: {data!r}", status=200) from error


def _error_of(response: httpx.Response) -> tuple[int | None, str]:
    """The ``{"code", "message"}`` of an error answer (or the best we can make of it)."""
    try:
        data = response.json()
    except ValueError:
        return None, response.text.strip() or response.reason_phrase
    if isinstance(data, dict):
        code = data.get("code")
        message = data.get("message") or data.get("detail") or response.reason_phrase
        return (code if isinstance(code, int) else None), str(message)
    return None, response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


class DispatcherApi:
    """Calls to the dispatcher; raises the SDK's named errors, never raw httpx ones."""

    def __init__(
        self,
        base_url: str = DEFAULT_DISPATCHER_URL,
        *,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout_s)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, self.base_url + path, **kwargs)
        except httpx.TransportError as error:
            detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            raise DispatcherUnreachable(detail) from error

    async def register(self, user_id: str, password: str) -> None:
        """``POST /v1/users``; raises UserExists when the id is taken."""
        response = await self._request(
            "POST", "/v1/users", json={"user_id": user_id, "password": password}
        )
        if response.status_code in (200, 201):
            return
        code, message = _error_of(response)
        if response.status_code == 409 or code == ErrorCode.USER_EXISTS:
            raise UserExists(
                f"user {user_id!r} already exists", status=response.status_code, code=code
            )
        raise DispatcherError(
            f"register failed ({response.status_code}): {message}",
            status=response.status_code,
            code=code,
        )

    async def issue_token(self, user_id: str, password: str) -> IssuedToken:
        """``POST /v1/tokens``; raises AuthFailed on bad credentials."""
        response = await self._request(
            "POST", "/v1/tokens", json={"user_id": user_id, "password": password}
        )
        code, message = _error_of(response)
        if response.status_code == 200:
            data = response.json()
            if not isinstance(data, dict) or not isinstance(data.get("token"), str):
                raise DispatcherError("token answer without a token", status=200, code=None)
            return IssuedToken(data["token"], data.get("expires_at"))
        if response.status_code in (400, 401, 403, 422):
            raise AuthFailed(message, code=code or int(ErrorCode.BAD_CREDENTIALS))
        if response.status_code == 429:
            raise LoginRateLimited(message, retry_after_s=_retry_after(response))
        raise DispatcherError(
            f"token request failed ({response.status_code}): {message}",
            status=response.status_code,
            code=code,
        )

    async def connector(
        self, token: str, exclude: set[str] | frozenset[str] = frozenset()
    ) -> ConnectorAddress:
        """``GET /v1/connector``: a live connector, avoiding ``exclude`` when possible."""
        params = {"exclude": ",".join(sorted(exclude))} if exclude else None
        response = await self._request(
            "GET",
            "/v1/connector",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        )
        code, message = _error_of(response)
        if response.status_code == 503:
            raise NoConnectorAvailable(
                f"no connector available: {message}", retry_after_s=_retry_after(response)
            )
        if response.status_code == 401:
            raise AuthFailed(message, code=code or int(ErrorCode.BAD_TOKEN))
        if response.status_code != 200:
            raise DispatcherError(
                f"connector lookup failed ({response.status_code}): {message}",
                status=response.status_code,
                code=code,
            )
        data = response.json()
        try:
            return ConnectorAddress(
                connector_id=str(data["connector_id"]),
                host=str(data["host"]),
                port=int(data["port"]),
                backoff=Backoff.from_json(data.get("backoff")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DispatcherError(f"unexpected connector answer: {data!r}", status=200) from error

    # ------------------------------------------------------------ with a token

    async def _authorized(
        self,
        method: str,
        path: str,
        token: str,
        *,
        expect: int = 200,
        json: Any = None,
    ) -> Any:
        """Call an endpoint that needs a token; the decoded JSON answer (None for 204).

        401 → AuthFailed (the SDK then fetches a new token once), 503 →
        ServiceUnavailable, other error statuses → RequestRefused with the
        server's code and message.
        """
        response = await self._request(
            method, path, json=json, headers={"Authorization": f"Bearer {token}"}
        )
        if response.status_code == expect:
            if response.status_code == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError as error:
                raise DispatcherError(
                    f"{method} {path}: answer is not JSON", status=response.status_code
                ) from error
        code, message = _error_of(response)
        if response.status_code == 401:
            raise AuthFailed(message, code=code or int(ErrorCode.BAD_TOKEN))
        if response.status_code == 503:
            raise ServiceUnavailable(f"service unavailable: {message}", code=code)
        if 400 <= response.status_code < 500:
            raise RequestRefused(message, status=response.status_code, code=code)
        raise DispatcherError(
            f"{method} {path} failed ({response.status_code}): {message}",
            status=response.status_code,
            code=code,
        )

    async def create_group(self, token: str, name: str) -> Group:
        """``POST /v1/groups``: a new group; the caller is its owner and admin."""
        data = await self._authorized("POST", "/v1/groups", token, expect=201, json={"name": name})
        return _group(data)

    async def my_groups(self, token: str) -> list[Group]:
        """``GET /v1/groups``: the groups the caller belongs to, with the caller's role."""
        data = await self._authorized("GET", "/v1/groups", token)
        groups = data.get("groups") if isinstance(data, dict) else None
        return [_group(item) for item in groups or ()]

    async def group_members(self, token: str, group_id: str) -> list[Member]:
        """``GET /v1/groups/{id}/members`` (members only: else RequestRefused NOT_A_MEMBER)."""
        data = await self._authorized("GET", f"/v1/groups/{_path(group_id)}/members", token)
        members = data.get("members") if isinstance(data, dict) else None
        return [
            Member(str(item.get("user_id")), str(item.get("role")))
            for item in members or ()
            if isinstance(item, dict)
        ]

    async def add_members(self, token: str, group_id: str, user_ids: Sequence[str]) -> int:
        """``POST /v1/groups/{id}/members`` (admins only); how many were not members yet."""
        data = await self._authorized(
            "POST",
            f"/v1/groups/{_path(group_id)}/members",
            token,
            json={"user_ids": list(user_ids)},
        )
        added = data.get("added") if isinstance(data, dict) else None
        return added if isinstance(added, int) else 0

    async def remove_member(self, token: str, group_id: str, user_id: str) -> None:
        """``DELETE /v1/groups/{id}/members/{user}`` (admins; or oneself)."""
        await self._authorized(
            "DELETE",
            f"/v1/groups/{_path(group_id)}/members/{_path(user_id)}",
            token,
            expect=204,
        )

    async def leave_group(self, token: str, group_id: str) -> None:
        """``POST /v1/groups/{id}/leave`` (the owner cannot leave)."""
        await self._authorized("POST", f"/v1/groups/{_path(group_id)}/leave", token, expect=204)

    async def friend_request(self, token: str, peer: str) -> Friendship:
        """``POST /v1/friends/requests``; ``accepted`` at once if ``peer`` had asked us."""
        data = await self._authorized(
            "POST", "/v1/friends/requests", token, expect=202, json={"user_id": peer}
        )
        return _friendship(data, peer)

    async def friend_accept(self, token: str, peer: str) -> Friendship:
        """``POST /v1/friends/requests/{peer}/accept``."""
        data = await self._authorized("POST", f"/v1/friends/requests/{_path(peer)}/accept", token)
        return _friendship(data, peer)

    async def friend_reject(self, token: str, peer: str) -> None:
        """``POST /v1/friends/requests/{peer}/reject`` (the asker is not told)."""
        await self._authorized(
            "POST", f"/v1/friends/requests/{_path(peer)}/reject", token, expect=204
        )

    async def friend_list(self, token: str) -> FriendList:
        """``GET /v1/friends``."""
        data = await self._authorized("GET", "/v1/friends", token)
        data = data if isinstance(data, dict) else {}
        return FriendList(
            friends=_strings(data.get("friends")),
            incoming=_strings(data.get("incoming")),
            outgoing=_strings(data.get("outgoing")),
        )

    async def friend_remove(self, token: str, peer: str) -> None:
        """``DELETE /v1/friends/{peer}``: the friendship ends for both users."""
        await self._authorized("DELETE", f"/v1/friends/{_path(peer)}", token, expect=204)


def _friendship(data: Any, peer: str) -> Friendship:
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        raise DispatcherError(f"unexpected friendship answer: {data!r}", status=200)
    user_id = data.get("user_id")
    return Friendship(user_id if isinstance(user_id, str) else peer, data["status"])
