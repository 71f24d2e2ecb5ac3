"""Fixtures of the platform tests: a started platform and an in-process HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudphone.api.app import create_app
from cloudphone.platform import Platform, build_platform
from cloudphone.settings import Settings, load_settings
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.leaks import drain
from tests.support.server import TEST_SECRET


@pytest.fixture(scope="session")
def migrated_postgres_url() -> Iterator[str]:
    """A PostgreSQL database of its own, which the platform migrates with Alembic.

    The shared session database is built with create_all by the engine tests.
    """
    url = create_postgres_database("cloudphone_platform")
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def platform_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each platform test runs on a fresh SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'platform.db'}"
    url: str = request.getfixturevalue("migrated_postgres_url")
    return url


@pytest.fixture
def make_settings(platform_url: str, tmp_path: Path, unique: str) -> Any:
    """Settings on the test database with fast leases (keyword overrides win)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "var",
            "database_url": platform_url,
            "jwt_secret": TEST_SECRET,
            "worker_id": f"w-{unique}",
            "worker_lease": timedelta(seconds=2),
            "worker_poll_interval": timedelta(milliseconds=50),
            "shutdown_grace": timedelta(seconds=5),
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
async def platform(make_settings: Any) -> AsyncIterator[Platform]:
    """A started platform with a worker; it stops once the runs it can drive have ended."""
    started = build_platform(make_settings(), with_worker=True)
    await started.start()
    yield started
    await drain(started.engine)
    await started.close()


@pytest.fixture
async def api(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """The API of ``platform``, in process."""
    transport = httpx.ASGITransport(app=create_app(platform))
    async with httpx.AsyncClient(transport=transport, base_url="http://cloudphone") as client:
        yield client
