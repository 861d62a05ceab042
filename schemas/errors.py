"""Error codes shared by the wire protocol and the HTTP APIs, in one table."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    # framing and protocol (1xxx)
    MALFORMED_FRAME = 1000
    UNSUPPORTED_VERSION = 1001
    FRAME_TOO_LARGE = 1002
    BAD_JSON = 1003
    UNKNOWN_OP = 1004
    BAD_REQUEST = 1005
    NOT_LOGGED_IN = 1006
    ALREADY_LOGGED_IN = 1007
    HEARTBEAT_TIMEOUT = 1008
    RATE_LIMITED = 1009
    # auth (2xxx)
    BAD_TOKEN = 2000
    TOKEN_EXPIRED = 2001
    TOKEN_REVOKED = 2002
    BAD_CREDENTIALS = 2003
    USER_EXISTS = 2004
    FORBIDDEN = 2005
    NOT_FOUND = 2006
    # messaging (3xxx)
    NOT_A_MEMBER = 3000
    UNKNOWN_RECIPIENT = 3001
    # server side (5xxx)
    UNAVAILABLE = 5000
    INTERNAL = 5001


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.MALFORMED_FRAME: 400,
    ErrorCode.UNSUPPORTED_VERSION: 400,
    ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.BAD_JSON: 400,
    ErrorCode.UNKNOWN_OP: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.NOT_LOGGED_IN: 401,
    ErrorCode.ALREADY_LOGGED_IN: 409,
    ErrorCode.HEARTBEAT_TIMEOUT: 408,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.BAD_TOKEN: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.TOKEN_REVOKED: 401,
    ErrorCode.BAD_CREDENTIALS: 401,
    ErrorCode.USER_EXISTS: 409,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.NOT_A_MEMBER: 403,
    ErrorCode.UNKNOWN_RECIPIENT: 404,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


class ImError(Exception):
    """Base of MM-IM's named errors: a code, a message, and an HTTP status."""

    def __init__(self, code: ErrorCode, message: str, *, request_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


class ProtocolError(ImError):
    """A bad frame. ``fatal`` means the byte stream can no longer be trusted."""

    def __init__(
        self, code: ErrorCode, message: str, *, request_id: int = 0, fatal: bool = False
    ) -> None:
        super().__init__(code, message, request_id=request_id)
        self.fatal = fatal


class RateLimitedError(ImError):
    """Refused for now; ``retry_after_s`` says when trying again makes sense."""

    def __init__(self, code: ErrorCode, message: str, *, retry_after_s: int) -> None:
        super().__init__(code, message)
        self.retry_after_s = retry_after_s


class AuthError(ImError):
    """Bad, expired or revoked credentials."""


class ForbiddenError(ImError):
    """The authenticated user may not do this."""

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.FORBIDDEN) -> None:
        super().__init__(code, message)
