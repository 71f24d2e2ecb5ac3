"""The console application, mounted by the API at ``/ui`` (same process, same auth).

A FastAPI sub-application of its own: its pages never appear in the API's OpenAPI document,
its errors are pages (not JSON), and its security headers apply to it alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloudphone.console import auth_routes, devices, overview, saga_detail, sagas
from cloudphone.console.rendering import build_environment, render
from cloudphone.console.security import (
    ConsoleContext,
    SignInRequired,
    TokenCheck,
    security_headers,
)
from cloudphone.domain import (
    ConflictError,
    DomainError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from cloudphone.platform import Platform
from cloudphone.saga import SagaNotFoundError

log = logging.getLogger("cloudphone.console")

STATIC = Path(__file__).parent / "static"
ROUTERS = (
    auth_routes.router,
    overview.router,
    sagas.router,
    saga_detail.router,
    devices.router,
    # business views: the payments/refunds and apps pages add their routers here.
)

DOMAIN_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (NotFoundError, 404),
    (ForbiddenError, 403),
    (ConflictError, 409),
    (InvalidInputError, 422),
    (UnavailableError, 503),
)
"""HTTP status of the error pages for each kind of domain error (others: 400)."""


def create_console(platform_of: Callable[[], Platform | None], verify: TokenCheck) -> FastAPI:
    """The console app.

    Args:
        platform_of: Returns the API's running platform (None until its lifespan started it).
        verify: The API's bearer-token check (signing in uses the same tokens).
    """
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.console = ConsoleContext(platform_of, verify)
    app.state.templates = build_environment()
    app.middleware("http")(security_headers)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(SagaNotFoundError, _not_found)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


async def _sign_in(request: Request, error: Exception) -> Response:
    """To the sign-in page, coming back here afterwards (htmx: a full-page redirect)."""
    base = request.scope.get("root_path", "")
    back = request.url.path if request.method == "GET" else f"{base}/"
    target = f"{base}/login?next={quote(back, safe='/')}"
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def _domain_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, DomainError)
    status = next((code for cls, code in DOMAIN_STATUS if isinstance(error, cls)), 400)
    return _error_page(request, status, error.message)


async def _not_found(request: Request, error: Exception) -> Response:
    return _error_page(request, 404, str(error))


async def _invalid(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    problems = "; ".join(str(e.get("msg", "")) for e in error.errors())
    return _error_page(request, 422, f"The request was not understood: {problems}")


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    message = "No such page." if error.status_code == 404 else str(error.detail)
    return _error_page(request, error.status_code, message)


def _error_page(request: Request, status: int, message: str) -> Response:
    template = "_error.html" if request.headers.get("HX-Request") == "true" else "error.html"
    return render(request, template, status_code=status, status=status, message=message)
