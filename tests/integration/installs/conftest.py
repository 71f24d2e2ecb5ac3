"""Fixtures of the installs tests: a started platform per test, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cloudphone.saga.testing import FaultInjector
from tests.support.installs_stack import (
    DATABASES,
    Installs,
    chosen_database,
    install_settings,
    migrated_database,
    started,
)


@pytest.fixture(scope="session")
def installs_postgres_url() -> Iterator[str]:
    """A PostgreSQL database of its own, which the platform migrates with Alembic."""
    yield from migrated_database("cloudphone_installs")


@pytest.fixture(params=DATABASES)
def installs_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test runs on a fresh SQLite file and on PostgreSQL."""
    return chosen_database(request, tmp_path, "installs_postgres_url")


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
