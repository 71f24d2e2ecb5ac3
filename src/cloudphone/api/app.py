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

from cloudphone.api import apps, billing, demo, devices, health, sagas
from cloudphone.api.deps import token_verifier
from cloudphone.api.errors import install_error_handlers
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
    # services: add your router here, one line each, e.g. `billing.router` (import
    # `cloudphone.api.billing` above with the others).
)
"""Every route group of the API (the demo's is added when ``settings.demo`` is on)."""

CONSOLE_PATH = "/ui"
"""Where the operator console is mounted."""

DESCRIPTION = """\
The backend core of a cloud-phone platform: payment refunds, APK uploads and device
provisioning, each driven by a durable saga.

Every route but `/healthz` needs `Authorization: Bearer <token>`
(`cloudphone token create --user U --role user|admin`). Errors are
`{"error": {"code": ..., "message": ...}}`. Routes that start a saga answer 202 with the run's
id and accept an `Idempotency-Key` header: repeating it answers 200 with the same run.
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if isinstance(source, Platform):
            yield
            return
        platform = build_platform(source, with_worker=with_worker)
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
    )
    app.state.tokens = token_verifier(settings)
    if isinstance(source, Platform):
        app.state.platform = source
        app.state.http_metrics = HttpMetrics(source.registry)
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    if settings.demo:
        app.include_router(demo.router)
    # The operator console (same process, same tokens); its pages stay out of the OpenAPI.
    app.mount(
        CONSOLE_PATH,
        create_console(lambda: getattr(app.state, "platform", None), app.state.tokens.verify_until),
    )
    return app


def _version() -> str:
    try:
        return version("cloudphone")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"
