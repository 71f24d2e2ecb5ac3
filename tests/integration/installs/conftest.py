"""Fixtures of the installs tests: a started platform per test, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cloudphone.saga.testing import FaultInjector
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.installs_stack import Installs, install_settings, started


@pytest.fixture(scope="session")
def installs_postgres_url() -> Iterator[str]:
    """A PostgreSQL database of its own, which the platform migrates with Alembic."""
    url = create_postgres_database("cloudphone_installs")
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def installs_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test runs on a fresh SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'installs.db'}"
    url: str = request.getfixturevalue("installs_postgres_url")
    return url


@pytest.fixture
def faults() -> FaultInjector:
    """Fault injection hooks of the test's platform."""
    return FaultInjector()


@pytest.fixture
async def installs(
    installs_url: str, tmp_path: Path, unique: str, faults: FaultInjector
) -> AsyncIterator[Installs]:
    """A started platform with a worker, filesystem storage and local devices."""
    settings = install_settings(installs_url, tmp_path / "var", f"w-{unique}")
    async with started(settings, hooks=faults) as built:
        yield built
