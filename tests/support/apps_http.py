"""The apps API in-process over ASGI, on a test's own apps wiring."""

from __future__ import annotations

import uuid
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
from tests.support.apps_harness import Apps

SECRET = "apps-http-test-secret-" + "x" * 32


def headers(user: str, role: Role = Role.USER, **extra: str) -> dict[str, str]:
    """Authorization headers of ``user`` (plus any extra headers)."""
    token = issue_token(SECRET, user, role, ttl=timedelta(hours=1))
    return {"Authorization": f"Bearer {token}", **extra}


def multipart(
    data: bytes, *, description: str | None = None, description_first: bool = False
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with ``file`` (and ``description``) and its content type."""
    boundary = uuid.uuid4().hex
    file_part = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="app.apk"\r\n'
            "Content-Type: application/vnd.android.package-archive\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    )
    parts = [file_part]
    if description is not None:
        text = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="description"\r\n\r\n'
            f"{description}\r\n"
        ).encode()
        parts.insert(0 if description_first else 1, text)
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@asynccontextmanager
async def apps_client(apps: Apps, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the real app, whose platform is this test's apps wiring."""
    settings = load_settings(
        data_dir=data_dir,
        database_url=apps.db.url.render_as_string(hide_password=False),
        jwt_secret=SecretStr(SECRET),
        auto_migrate=False,
        apps=apps.service.config,
    )
    platform = Platform(settings, apps.db, apps.engine, build_registry(), with_worker=False)
    platform.apps = apps.service
    transport = httpx.ASGITransport(app=create_app(platform))
    async with httpx.AsyncClient(transport=transport, base_url="http://apps.test") as client:
        yield client
