"""The dispatcher's HTTP API as the client sees it: users, tokens, connector lookup.

The only module of the client that talks HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from client.backoff import Backoff
from client.errors import (
    AuthFailed,
    DispatcherError,
    DispatcherUnreachable,
    NoConnectorAvailable,
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
