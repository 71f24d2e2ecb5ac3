"""The real API in-process over ASGI, on a test's own wiring of one or more services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from cloudphone.api.app import create_app
from cloudphone.api.auth import issue_token
from cloudphone.domain import Role
from cloudphone.platform import Platform, build_registry
from cloudphone.saga import Database, SagaEngine
from cloudphone.settings import load_settings

SECRET = "asgi-test-secret-" + "x" * 32
"""JWT secret of the in-process apps (tokens from :func:`headers` verify against it)."""


def headers(user: str, role: Role = Role.USER, **extra: str) -> dict[str, str]:
    """Authorization headers of ``user`` (plus any extra headers)."""
    token = issue_token(SECRET, user, role, ttl=timedelta(hours=1))
    return {"Authorization": f"Bearer {token}", **extra}


@asynccontextmanager
async def service_client(
    db: Database,
    engine: SagaEngine,
    data_dir: Path,
    *,
    host: str,
    settings: dict[str, Any] | None = None,
    **services: object,
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the real app whose platform holds these services (``billing=…``).

    Args:
        db: The test's database.
        engine: The test's saga engine.
        data_dir: Where the settings put their files.
        host: Base host of the client's URLs.
        settings: Extra settings (e.g. a service's config section).
        **services: Service objects to set on the platform, by attribute name.
    """
    loaded = load_settings(
        data_dir=data_dir,
        database_url=db.url.render_as_string(hide_password=False),
        jwt_secret=SecretStr(SECRET),
        auto_migrate=False,
        **(settings or {}),
    )
    platform = Platform(loaded, db, engine, build_registry(), with_worker=False)
    for name, service in services.items():
        setattr(platform, name, service)
    transport = httpx.ASGITransport(app=create_app(platform))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
        yield client
