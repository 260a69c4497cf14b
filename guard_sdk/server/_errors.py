"""Errors as JSON in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, which openai clients parse
into their ``APIStatusError`` subclasses; and the status each guard_sdk error maps to."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .._errors import (
    GuardError,
    GuardTimeoutError,
    InputError,
    InputTypeError,
    TextTooLongError,
    UnsupportedClientError,
)

__all__ = ["APIError", "error_body", "error_response", "install_handlers"]


class APIError(Exception):
    """Answered as ``status`` with an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    kind = (
        "authentication_error"
        if status == 401
        else "invalid_request_error"
        if status < 500
        else "upstream_error"
        if status in (502, 504)
        else "server_error"
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int, message: str, *, code: str | None = None, param: str | None = None, **extra: Any
) -> JSONResponse:
    body = error_body(status, message, code=code, param=param)
    body["error"].update(extra)
    return JSONResponse(body, status_code=status)


def guard_error(exc: GuardError) -> APIError:
    """The HTTP error a guard_sdk error raised by a check becomes: the caller's input is a 4xx, the rest 5xx."""
    if isinstance(exc, TextTooLongError):
        return APIError(413, str(exc), code="text_too_long")
    if isinstance(exc, InputTypeError):
        return APIError(422, str(exc), code="invalid_type")
    if isinstance(exc, (InputError, UnsupportedClientError)):
        return APIError(400, str(exc), code="invalid_input")
    if isinstance(exc, GuardTimeoutError):
        return APIError(503, f"{exc}; the server is busy, retry later", code="check_timeout")
    return APIError(500, f"{type(exc).__name__}: {exc}", code="guard_error")


def _location(loc: tuple[int | str, ...]) -> str:
    """``("body", "texts", 0)`` -> ``texts[0]``."""
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "body"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, code=exc.code, param=exc.param)

    @app.exception_handler(GuardError)
    async def guard_failure(request: Request, exc: GuardError) -> JSONResponse:
        return await api_error(request, guard_error(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        where = [_location(tuple(error.get("loc", ()))) for error in errors]
        message = "; ".join(f"{at}: {error.get('msg')}" for at, error in zip(where[:5], errors))
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return error_response(422, message + more, code="invalid_request", param=where[0] if where else None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
