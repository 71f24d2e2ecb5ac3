"""Every domain and engine error maps to its status code and the JSON error shape."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from cloudphone.api.errors import install_error_handlers, status_of
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
from cloudphone.saga import InvalidSagaInputError, OperatorActionError, SagaNotFoundError

CASES: list[tuple[Exception, int, str]] = [
    (InvalidInputError("bad amount"), 422, "invalid_input"),
    (NotFoundError("no payment"), 404, "not_found"),
    (ForbiddenError("not yours"), 403, "forbidden"),
    (ConflictError("busy"), 409, "conflict"),
    (ConflictError("dup", code="duplicate_version"), 409, "duplicate_version"),
    (QuotaExceededError("too many devices"), 409, "quota_exceeded"),
    (PayloadTooLargeError("2 GiB max"), 413, "payload_too_large"),
    (UnavailableError("provider down"), 503, "unavailable"),
    (SagaNotFoundError("no saga run 'x'"), 404, "not_found"),
    (OperatorActionError("cannot retry"), 409, "operator_action_rejected"),
    (InvalidSagaInputError("not JSON"), 422, "invalid_input"),
]


def _app(error: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


async def _get(app: FastAPI) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get("/boom")


@pytest.mark.parametrize(("error", "status", "code"), CASES, ids=lambda v: str(v)[:30])
async def test_errors_become_json_with_their_status(
    error: Exception, status: int, code: str
) -> None:
    """Status from the error's class, code from the error, message kept."""
    response = await _get(_app(error))
    assert response.status_code == status
    assert response.json() == {"error": {"code": code, "message": str(error)}}


async def test_unexpected_errors_are_a_500_that_reveals_nothing() -> None:
    """A bug answers a generic 500 in the same shape (details go to the log only)."""
    response = await _get(_app(RuntimeError("secret connection string")))
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal error"}}


def test_an_unmapped_domain_error_is_a_server_error() -> None:
    """A new DomainError subclass without a mapping is a bug, not a client error."""

    class Strange(DomainError):
        code = "strange"

    assert status_of(Strange("?")) == 500
    assert status_of(QuotaExceededError("q")) == 409
