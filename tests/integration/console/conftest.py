"""Fixtures of the console tests: a started platform (SQLite, with a worker) and browsers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cloudphone.api.app import create_app
from cloudphone.api.auth import issue_token
from cloudphone.billing.config import BillingConfig
from cloudphone.domain import Role
from cloudphone.platform import Platform, build_platform
from cloudphone.settings import load_settings
from tests.support.console import signed_in
from tests.support.server import TEST_SECRET

Browser = Callable[..., Awaitable[tuple[httpx.AsyncClient, str]]]
RECONCILE_AGE = timedelta(seconds=2)
"""How long a payment stays PENDING before the overview lists it as stuck."""


def token(
    user: str,
    role: Role = Role.USER,
    ttl: timedelta = timedelta(hours=1),
    now: datetime | None = None,
) -> str:
    """A bearer token of the test platform (issued at ``now``)."""
    return issue_token(TEST_SECRET, user, role, ttl=ttl, now=now)


@pytest.fixture
async def platform(tmp_path: Path, unique: str) -> AsyncIterator[Platform]:
    """A started platform on a fresh SQLite file, with a fast worker."""
    settings = load_settings(
        data_dir=tmp_path / "var",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'console.db'}",
        jwt_secret=TEST_SECRET,
        worker_id=f"w-{unique}",
        worker_lease=timedelta(seconds=2),
        worker_poll_interval=timedelta(milliseconds=50),
        shutdown_grace=timedelta(seconds=5),
        billing=BillingConfig(
            # Refunds that fail reach NEEDS_ATTENTION within a second, and a PENDING payment
            # counts as stuck after 2 s; the periodic payment reconcile is run by the tests.
            refund_retry_initial_interval=timedelta(milliseconds=20),
            stripe_timeout=timedelta(milliseconds=500),
            stripe_connect_timeout=timedelta(milliseconds=500),
            payment_reconcile_age=RECONCILE_AGE,
            payment_reconcile_interval=timedelta(0),
        ),
    )
    started = build_platform(settings, with_worker=True)
    await started.start()
    yield started
    await started.close()


@pytest.fixture
def app(platform: Platform) -> FastAPI:
    """The app (API and console) over the platform."""
    return create_app(platform)


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app (API + console) without a session."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cloudphone.test") as c:
        yield c


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[Browser]:
    """Open a signed-in "browser" (a client with the session cookie) and its CSRF token."""
    clients: list[httpx.AsyncClient] = []

    async def open_as(user: str, role: Role = Role.USER) -> tuple[httpx.AsyncClient, str]:
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://cloudphone.test")
        clients.append(client)
        return client, await signed_in(client, token(user, role))

    yield open_as
    for client in clients:
        await client.aclose()
