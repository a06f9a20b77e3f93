"""The API's one error shape, and how backend errors map to HTTP statuses::

    {"error": {"code": "insufficient_credits", "message": "...", "message_zh": "...", "field": null}}

``field`` names the request field at fault (a parameter, ``webhook_url``, ``file``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.errors import (AuthError, GuardRejected, InsufficientCredits, InvalidParameter, InvalidUpload,
                            JobStateError, LimitReached, NodeUnavailable, NotFound, PermissionDenied, RateLimited,
                            StudioError, Unavailable)

log = logging.getLogger(__name__)

RETRY_UNAVAILABLE_SECONDS = 5


class ErrorBody(BaseModel):
    code: str
    message: str
    message_zh: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """An answer other than success, raised by a route."""

    def __init__(self, status: int, code: str, message: str, zh: str | None = None, *, field: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.zh = status, code, message, zh or message
        self.field, self.headers, self.extra = field, headers or {}, extra or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message, "message_zh": self.zh,
                                          "field": self.field, **self.extra}}
        return JSONResponse(body, status_code=self.status, headers={"Cache-Control": "no-store", **self.headers})


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds)))}


def from_studio_error(exc: StudioError) -> ApiError:
    """The API answer for a backend error."""
    msg, zh = exc.message, exc.zh
    if isinstance(exc, InvalidParameter):
        if exc.param == "idempotency_key" and "already used" in msg:
            return ApiError(409, "idempotency_conflict", msg, zh, field="Idempotency-Key")
        return ApiError(400, "invalid_parameter", msg, zh, field=exc.param)
    if isinstance(exc, LimitReached):
        if exc.retry_after <= 0:  # a quota: waiting does not free it
            return ApiError(413, exc.limit, msg, zh, field="file")
        return ApiError(429, exc.limit, msg, zh, headers=_retry_after(exc.retry_after),
                        extra={"retry_after": max(1, round(exc.retry_after))})
    if isinstance(exc, RateLimited):
        return ApiError(429, "rate_limited", msg, zh, headers=_retry_after(exc.retry_after),
                        extra={"retry_after": max(1, round(exc.retry_after))})
    if isinstance(exc, GuardRejected):
        return ApiError(400, "guard_rejected", msg, zh)
    if isinstance(exc, InvalidUpload):
        too_large = "too large" in msg.lower() or "larger than" in msg.lower()
        return ApiError(413 if too_large else 400, "too_large" if too_large else "invalid_upload", msg, zh, field="file")
    if isinstance(exc, InsufficientCredits):
        return ApiError(402, "insufficient_credits", msg, zh)
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", msg, zh)
    if isinstance(exc, AuthError):
        return ApiError(401, "unauthorized", msg, zh, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, PermissionDenied):
        return ApiError(403, "forbidden", msg, zh)
    if isinstance(exc, JobStateError):
        return ApiError(409, "job_state", msg, zh)
    if isinstance(exc, NodeUnavailable):
        return ApiError(503, "no_node", msg, zh, headers=_retry_after(30))
    if isinstance(exc, Unavailable):
        return ApiError(503, "unavailable", msg, zh, headers=_retry_after(RETRY_UNAVAILABLE_SECONDS))
    return ApiError(400, "rejected", msg, zh)


_HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               413: "too_large", 415: "unsupported_media_type"}


def install(app: FastAPI) -> None:
    """Every failure of ``app`` in the one shape."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StudioError)
    async def studio_error(request: Request, exc: StudioError) -> JSONResponse:
        answer = from_studio_error(exc)
        if answer.status >= 500:
            log.warning("%s %s answered %d: %s", request.method, request.url.path, answer.status, exc)
        return answer.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(where) or None
        text = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg", "invalid request"))
        return ApiError(400, "invalid_request", text, f"请求无效：{text}", field=field).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return ApiError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})).response()
