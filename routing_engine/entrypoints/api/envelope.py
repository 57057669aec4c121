"""Envelope: every answer has the same shape, successes and errors alike.

    {"success": true,  "data": ..., "meta": {"timestamp": ..., "request_id": ...}}
    {"success": false, "error": {"code": ..., "message": ..., "details": [...]}, "meta": {...}}

Database refusals that slip past validation are mapped to client errors here (a unique key to
409, a bad value to 422), so a request can end in a 500 only through a real bug. Error bodies
never echo the submitted values: a validation error names the field and the rule, not the input
(which may be a password).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

log = logging.getLogger("warp.api")

T = TypeVar("T")

_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
          422: "validation_failed", 503: "unavailable"}


class Page(BaseModel):
    limit: int
    next_cursor: str | None = None


class Meta(BaseModel):
    timestamp: datetime
    request_id: str
    page: Page | None = None


class Envelope(BaseModel, Generic[T]):
    success: Literal[True] = True
    data: T
    meta: Meta


class FieldError(BaseModel):
    field: str
    message: str
    type: str = "invalid"
    line: int | None = Field(default=None, description="for file uploads: the CSV line")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[FieldError] = []


class ErrorEnvelope(BaseModel):
    success: Literal[False] = False
    error: ErrorBody
    meta: Meta


class ApiError(Exception):
    """A client error with its status, a stable code and (for 422) field errors."""

    def __init__(self, status: int, message: str, details: list[FieldError] | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []
        self.code = code or _CODES.get(status, "error")


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, f"{field}: {message}", [FieldError(field=field, message=message)])


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "")) or "req_unknown"


def meta(request_id: str, page: Page | None = None) -> Meta:
    return Meta(timestamp=datetime.now(UTC), request_id=request_id, page=page)


def error_response(status: int, request_id: str, message: str, details: list[FieldError] | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorEnvelope(error=ErrorBody(code=code or _CODES.get(status, "error"), message=message,
                                         details=details or []), meta=meta(request_id))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        out.append(FieldError(field=loc or "request", message=str(err.get("msg", "invalid")),
                              type=str(err.get("type", "invalid"))))
    return out


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into an error envelope."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, request_id_of(request), exc.message, exc.details, exc.code)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = _validation_details(exc)
        if any(d.type == "json_invalid" for d in details):
            return error_response(400, request_id_of(request), "the request body is not valid JSON",
                                  details, code="malformed_json")
        return error_response(422, request_id_of(request), "the request is not valid", details)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        message = exc.detail if isinstance(exc.detail, str) else _CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, request_id_of(request), message,
                              headers=dict(exc.headers) if exc.headers else None)

    async def on_database(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, psycopg.Error)
        status, message = database_error(exc)
        if status >= 500:
            log.error("request %s: database unavailable: %s", request_id_of(request), exc)
        return error_response(status, request_id_of(request), message)

    async def on_anything(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s failed", request_id_of(request))
        return error_response(500, request_id_of(request), "internal error; quote the request_id",
                              code="internal_error")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(psycopg.Error, on_database)
    app.add_exception_handler(Exception, on_anything)


def database_error(exc: psycopg.Error) -> tuple[int, str]:
    """Status and message for a database refusal; constraint names, never values."""
    constraint = getattr(exc.diag, "constraint_name", None) if exc.diag else None
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return 409, f"already exists (unique constraint {constraint})"
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        return 409, f"still referenced, or refers to something missing (constraint {constraint})"
    if isinstance(exc, psycopg.errors.IntegrityError):
        return 422, f"refused by the database (constraint {constraint})"
    if isinstance(exc, psycopg.DataError):
        return 422, "a value is out of range or not representable"
    return 503, "the database is unavailable"


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses (all share one schema)."""
    text = {400: "Malformed request (e.g. invalid JSON)", 401: "Missing or invalid credentials",
            403: "The caller's role or scope does not allow this", 404: "No such resource (or not yours)",
            409: "Conflicts with existing data", 413: "Request body too large",
            422: "Validation failed; `details` names each field", 503: "A backing store is unavailable"}
    return {s: {"model": ErrorEnvelope, "description": text[s]} for s in statuses}


def ok(request_id: str, data: Any, page: Page | None = None) -> dict[str, Any]:
    """A success envelope; the route's response model validates and serialises it."""
    return {"success": True, "data": data, "meta": meta(request_id, page)}


def paged(request_id: str, rows: list[Any], limit: int, cursor_of: Any = None) -> dict[str, Any]:
    """A page of ``rows`` (fetched with limit + 1, so one extra row means there is more)."""
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = (cursor_of or (lambda r: str(r["id"])))(rows[-1]) if more else None
    return ok(request_id, rows, Page(limit=limit, next_cursor=cursor))
