"""The devices API in-process over ASGI, on a test's own devices wiring."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
from pydantic import SecretStr

from cloudphone.api.app import create_app
from cloudphone.api.auth import issue_token
from cloudphone.domain import Role
from cloudphone.platform import Platform, build_registry
from cloudphone.settings import load_settings
from tests.support.devices_stack import DeviceStack

SECRET = "devices-http-test-secret-" + "x" * 32


def headers(user: str, role: Role = Role.USER, **extra: str) -> dict[str, str]:
    """Authorization headers of ``user`` (plus any extra headers)."""
    token = issue_token(SECRET, user, role, ttl=timedelta(hours=1))
    return {"Authorization": f"Bearer {token}", **extra}


@asynccontextmanager
async def devices_client(stack: DeviceStack, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the real app, whose platform is this test's devices wiring."""
    settings = load_settings(
        data_dir=data_dir,
        database_url=stack.db.url.render_as_string(hide_password=False),
        jwt_secret=SecretStr(SECRET),
        auto_migrate=False,
    )
    platform = Platform(settings, stack.db, stack.engine, build_registry(), with_worker=False)
    platform.devices = stack.service
    app = create_app(platform)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://devices.test") as client:
        yield client
