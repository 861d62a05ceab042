"""The SDK's named errors: what a client application can catch and act on."""

from __future__ import annotations

from schemas.errors import ErrorCode

# ERROR codes after which the server closes the connection (docs/protocol.md).
AUTH_CODES = frozenset(
    {
        ErrorCode.BAD_TOKEN,
        ErrorCode.TOKEN_EXPIRED,
        ErrorCode.TOKEN_REVOKED,
        ErrorCode.BAD_CREDENTIALS,
    }
)
# ERROR codes for a SEND that are worth retrying with the same client_msg_id.
RETRYABLE_SEND_CODES = frozenset(
    {ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL}
)


def code_name(code: int | None) -> str:
    """``BAD_TOKEN`` for 2000; the bare number for codes this SDK does not know."""
    if code is None:
        return "?"
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


class ClientError(Exception):
    """Base of every error the SDK raises; ``code`` is the protocol error code if any."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class DispatcherUnreachable(ClientError):
    """The dispatcher did not answer at all (refused, DNS, timeout)."""


class DispatcherError(ClientError):
    """The dispatcher answered with an error status."""

    def __init__(self, message: str, *, status: int, code: int | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class NoConnectorAvailable(DispatcherError):
    """503 from ``GET /v1/connector``: no live connector right now."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message, status=503, code=int(ErrorCode.UNAVAILABLE))
        self.retry_after_s = retry_after_s


class LoginRateLimited(DispatcherError):
    """429 from ``POST /v1/tokens``: too many failed passwords for the user, or attempts
    from this address; the password was not checked. Try again after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message, status=429, code=int(ErrorCode.RATE_LIMITED))
        self.retry_after_s = retry_after_s


class UserExists(DispatcherError):
    """``POST /v1/users`` for a user id that is taken."""


class RequestRefused(DispatcherError):
    """The dispatcher refused a groups or friends request (400, 403, 404, 409).

    For example 403 NOT_A_MEMBER (not in the group), 403 FORBIDDEN (not an admin),
    404 NOT_FOUND (no such group or user). ``message`` is the server's.
    """

    def __str__(self) -> str:
        if self.code is None:
            return f"HTTP {self.status}: {self.message}"
        return f"{code_name(self.code)} ({self.code}): {self.message}"


class ServiceUnavailable(DispatcherError):
    """503 from a dispatcher call other than the connector lookup; worth retrying."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message, status=503, code=code or int(ErrorCode.UNAVAILABLE))


class AuthFailed(ClientError):
    """Bad password, or a token the connector refused (bad, expired, revoked)."""


class ServerError(ClientError):
    """An ERROR frame answering one of our requests."""

    def __init__(self, message: str, *, code: int, request_id: int = 0) -> None:
        super().__init__(message, code=code)
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{code_name(self.code)} ({self.code}): {self.message}"


class ConnectionLost(ClientError):
    """The connection ended and the client will not (or could not) reconnect."""


class ClientClosed(ClientError):
    """The client was closed by the application."""
