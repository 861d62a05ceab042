"""The HTTP side of the error table: one JSON error shape for every MM-IM HTTP API.

Every error leaves as ``{"code": int, "message": str}`` with the status of
``schemas.errors.HTTP_STATUS``; request validation failures are 400 ``BAD_REQUEST``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import HTTP_STATUS, ErrorCode, ImError, RateLimitedError

log = logging.getLogger(__name__)

TOKEN_ERRORS = frozenset({ErrorCode.BAD_TOKEN, ErrorCode.TOKEN_EXPIRED, ErrorCode.TOKEN_REVOKED})


class ErrorBody(BaseModel):
    """Every error response."""

    code: int = Field(description="MM-IM error code (schemas.errors.ErrorCode)")
    message: str


def error_responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses an endpoint can answer."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(HTTP_STATUS[code], []).append(f"{code.name} ({int(code)})")
    return {
        http_status: {"model": ErrorBody, "description": ", ".join(names)}
        for http_status, names in sorted(by_status.items())
    }


def validation_message(error: RequestValidationError) -> str:
    """A one-line, human-readable summary of what was wrong with a request."""
    parts = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            return "request body is not valid JSON"
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or "invalid request"


def install_error_handlers(
    app: FastAPI,
    *,
    retry_after_s: int = 1,
    unavailable: tuple[type[Exception], ...] = (),
) -> None:
    """Map ImError, validation errors, HTTP errors and crashes to the one JSON error shape.

    Exceptions of the ``unavailable`` types (a backend that failed, see
    store/backend_errors.py) are answered 503 UNAVAILABLE with Retry-After, not 500.
    """

    def error_response(
        code: ErrorCode,
        message: str,
        http_status: int | None = None,
        retry_after: int | None = None,
    ) -> JSONResponse:
        headers = {}
        if code in TOKEN_ERRORS:
            headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        if code in (ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED):
            headers["Retry-After"] = str(retry_after or retry_after_s)
        return JSONResponse(
            {"code": int(code), "message": message},
            status_code=http_status or HTTP_STATUS[code],
            headers=headers,
        )

    @app.exception_handler(ImError)
    async def _im_error(request: Request, error: ImError) -> JSONResponse:
        retry_after = error.retry_after_s if isinstance(error, RateLimitedError) else None
        return error_response(error.code, error.message, retry_after=retry_after)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(ErrorCode.BAD_REQUEST, validation_message(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = ErrorCode.NOT_FOUND if error.status_code == 404 else ErrorCode.BAD_REQUEST
        return error_response(code, str(error.detail), error.status_code)

    async def _backend_failed(request: Request, error: Exception) -> JSONResponse:
        log.warning("%s %s: backend unavailable: %r", request.method, request.url.path, error)
        return error_response(ErrorCode.UNAVAILABLE, "service unavailable, retry later")

    for error_type in unavailable:
        app.add_exception_handler(error_type, _backend_failed)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(ErrorCode.INTERNAL, "internal error")

    _drop_fastapi_422(app)


def _drop_fastapi_422(app: FastAPI) -> None:
    """Make the OpenAPI spec tell the truth: validation errors are our 400, not FastAPI's 422."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = build()
        for path in spec.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schemas = spec.get("components", {}).get("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


# --- committed OpenAPI specs (docs/openapi/*.json), exported by each service's openapi module

OPENAPI_DIR = Path(__file__).resolve().parents[1] / "docs" / "openapi"


def render_spec(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def export_spec(current_spec: Callable[[], dict[str, Any]], default_path: Path) -> None:
    """Write ``current_spec()`` to the path given on the command line, or ``default_path``."""
    args = sys.argv[1:]
    path = Path(args[0]) if args else default_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_spec(current_spec()))
    print(f"wrote {path}")
