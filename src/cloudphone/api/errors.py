"""Every error as JSON ``{"error": {"code", "message"}}`` with the right status code.

Domain errors (``cloudphone.domain``) and engine errors map by type; request validation errors
and undecodable bodies become 422; unknown routes 404; a database that cannot be reached (down,
restarting, pool exhausted: :func:`cloudphone.saga.is_database_unavailable`) 503
``database_unavailable`` with ``Retry-After``, on every route; anything unexpected a logged 500
that reveals nothing. Routes document the shapes with :func:`error_responses`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloudphone.domain import (
    ConflictError,
    DomainError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    QuotaExceededError,
    UnavailableError,
)
from cloudphone.saga import (
    DatabaseUnavailableError,
    InvalidSagaInputError,
    OperatorActionError,
    SagaNotFoundError,
    is_database_unavailable,
)

log = logging.getLogger("cloudphone.api")

RETRY_AFTER_SECONDS = 2
"""``Retry-After`` of a 503 for an unreachable database: about what a restart takes."""


class AuthenticationError(DomainError):
    """No valid bearer token (HTTP 401)."""

    code = "unauthenticated"


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str = Field(description="Stable machine-readable name, e.g. `not_found`.")
    message: str = Field(description="Human-readable explanation.")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="Per-field problems of an invalid request."
    )


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


# Most specific first: the first class in an error's MRO that is listed decides.
DOMAIN_STATUS: dict[type[Exception], int] = {
    AuthenticationError: 401,
    PayloadTooLargeError: 413,
    InvalidInputError: 422,
    NotFoundError: 404,
    ForbiddenError: 403,
    QuotaExceededError: 409,
    ConflictError: 409,
    UnavailableError: 503,
}
"""HTTP status of each domain error class (subclasses inherit their parent's)."""

ENGINE_ERRORS: dict[type[Exception], tuple[int, str]] = {
    SagaNotFoundError: (404, "not_found"),
    OperatorActionError: (409, "operator_action_rejected"),
    InvalidSagaInputError: (422, "invalid_input"),
}
"""Status and code of the engine errors a route may let through."""

DESCRIPTIONS = {
    400: "Bad request.",
    401: "Missing, invalid or expired bearer token.",
    403: "Authenticated, but not allowed (admin only).",
    404: "No such resource, or not yours.",
    409: "The resource's state forbids this action.",
    413: "Payload too large.",
    422: "The request is invalid.",
    503: "A dependency is unavailable; try again later.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the error body for each status."""
    return {
        status: {"model": ErrorBody, "description": DESCRIPTIONS.get(status, "Error.")}
        for status in statuses
    }


def error_json(
    status: int,
    code: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error response in the platform's shape."""
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def status_of(error: DomainError) -> int:
    """The HTTP status of a domain error (500 for an unmapped DomainError subclass)."""
    for cls in type(error).__mro__:
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]
    return 500


async def _domain_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DomainError)
    status = status_of(error)
    if status == 500:
        log.error("unmapped domain error %s: %s", type(error).__name__, error)
        return error_json(500, "internal", "internal error")
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_json(status, error.code, error.message, headers=headers)


async def _engine_error(_request: Request, error: Exception) -> JSONResponse:
    status, code = next(v for cls, v in ENGINE_ERRORS.items() if isinstance(error, cls))
    return error_json(status, code, str(error))


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    details = [
        {"loc": [str(part) for part in item.get("loc", ())], "msg": str(item.get("msg", ""))}
        for item in error.errors()
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"])
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    return error_json(422, "invalid_request", message, details=details)


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400:
        # FastAPI's answer to a body it cannot decode at all (bad UTF-8, broken multipart);
        # a body that decodes but is not valid JSON is already a 422. One status, one code.
        return error_json(422, "invalid_request", f"the request body is malformed: {error.detail}")
    code = _HTTP_CODES.get(error.status_code, "http_error")
    headers = dict(error.headers) if error.headers else None
    return error_json(error.status_code, code, str(error.detail), headers=headers)


async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=error)
    return error_json(500, "internal", "internal error")


class _DatabaseErrors:
    """503 with ``Retry-After`` while the database is unreachable; other database errors 500.

    An outage fails every request at once, so it is logged at most once per ``every`` seconds
    (with how many requests it refused), without tracebacks.
    """

    def __init__(self, every: float = 10.0) -> None:
        self._every = every
        self._logged_at = float("-inf")
        self._refused = 0

    async def __call__(self, request: Request, error: Exception) -> JSONResponse:
        if not is_database_unavailable(error):
            return await _unexpected(request, error)
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= self._every:
            log.warning(
                "database unavailable: answering 503 (%d requests since the last report): %s",
                self._refused,
                error,
            )
            self._logged_at, self._refused = now, 0
        return error_json(
            503,
            "database_unavailable",
            "the database is unavailable right now; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that render every error in the platform's shape."""
    app.add_exception_handler(DomainError, _domain_error)
    for cls in ENGINE_ERRORS:
        app.add_exception_handler(cls, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Registered by class (not under Exception), so a refused request is answered without
    # the traceback the server logs for unhandled errors.
    database_errors = _DatabaseErrors()
    app.add_exception_handler(DatabaseUnavailableError, database_errors)
    app.add_exception_handler(SQLAlchemyError, database_errors)
    app.add_exception_handler(Exception, _unexpected)
