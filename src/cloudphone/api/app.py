"""The FastAPI application factory.

Nothing is connected at import time: :func:`create_app` only declares routes; its lifespan
builds and starts the platform (or uses one the caller started). Services register their
routes by adding their router to :data:`ROUTERS` (one line each).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, FastAPI

from cloudphone.adapters import build_telemetry
from cloudphone.api import apps, billing, demo, devices, health, installs, sagas
from cloudphone.api.deps import token_verifier
from cloudphone.api.docs import install_docs
from cloudphone.api.errors import install_error_handlers
from cloudphone.api.nul_guard import NulGuardMiddleware
from cloudphone.api.observability import HttpMetrics, MetricsMiddleware
from cloudphone.console import create_console
from cloudphone.platform import Platform, build_platform
from cloudphone.settings import Settings

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    sagas.router,
    billing.router,
    devices.router,
    apps.router,
    installs.router,
    # services: add your router here, one line each, e.g. `billing.router` (import
    # `cloudphone.api.billing` above with the others).
)
"""Every route group of the API (the demo's is added when ``settings.demo`` is on)."""

CONSOLE_PATH = "/ui"
"""Where the operator console is mounted."""

DESCRIPTION = """\
The backend core of a cloud-phone platform: payment refunds, APK uploads and device
provisioning, each driven by a durable saga.

Every route but the probes `/healthz` and `/readyz` needs `Authorization: Bearer <token>`
(`cloudphone token create --user U --role user|admin`). Errors are
`{"error": {"code": ..., "message": ...}}`. Routes that start a saga answer 202 with the run's
id and accept an `Idempotency-Key` header: repeating it answers 200 with the same run.
A NUL character (`\\u0000`) anywhere in a request (path, query, header, body) is refused with
422 `invalid_request` naming the field.
"""


def create_app(source: Settings | Platform, *, with_worker: bool = True) -> FastAPI:
    """The HTTP API over a platform.

    Args:
        source: Settings (the app's lifespan builds, starts and closes the platform), or a
            platform the caller starts and closes itself (tests, embedding).
        with_worker: With settings: also run a worker in this process (``serve``; not
            ``serve --no-worker``). Ignored for a given platform.
    """
    settings = source.settings if isinstance(source, Platform) else source
    # Built before the platform: FastAPI's instrumentation wraps the app when it is created.
    telemetry = source.telemetry if isinstance(source, Platform) else build_telemetry(source)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if isinstance(source, Platform):
            yield
            return
        platform = build_platform(source, with_worker=with_worker, telemetry=telemetry)
        await platform.start()
        app.state.platform = platform
        app.state.http_metrics = HttpMetrics(platform.registry)
        try:
            yield
        finally:
            await platform.close()

    app = FastAPI(
        title="cloudphone",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from the package by install_docs, not from a CDN
        redoc_url=None,
    )
    app.state.tokens = token_verifier(settings)
    if isinstance(source, Platform):
        app.state.platform = source
        app.state.http_metrics = HttpMetrics(source.registry)
    install_error_handlers(app)
    app.add_middleware(NulGuardMiddleware)  # inside the metrics: its 422s are counted
    app.add_middleware(MetricsMiddleware)
    install_docs(app)
    for router in ROUTERS:
        app.include_router(router)
    if settings.demo:
        app.include_router(demo.router)
    # The operator console (same process, same tokens); its pages stay out of the OpenAPI.
    app.mount(
        CONSOLE_PATH,
        create_console(lambda: getattr(app.state, "platform", None), app.state.tokens.verify_until),
    )
    if telemetry is not None:
        telemetry.instrument(app)
    return app


def _version() -> str:
    try:
        return version("cloudphone")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"
