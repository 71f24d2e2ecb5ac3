"""Fixtures shared by every suite: databases on SQLite and PostgreSQL, unique names."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudphone.saga import Saga, SagaEngine
from tests.support.databases import create_postgres_database, drop_postgres_database

ENGINE_DEFAULTS: dict[str, Any] = {
    "lease": timedelta(seconds=2),
    "poll_interval": timedelta(milliseconds=50),
}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database for this test session (dropped at the end)."""
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each integration test runs twice: on a fresh SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'cloudphone.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def unique() -> str:
    """A short unique suffix: tests share the PostgreSQL database, never their names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def make_engine(database_url: str, unique: str) -> AsyncIterator[Callable[..., SagaEngine]]:
    """Build engines on the test database; closes them at the end of the test."""
    engines: list[SagaEngine] = []

    def make(sagas: list[Saga], **options: Any) -> SagaEngine:
        settings = {**ENGINE_DEFAULTS, "worker_id": f"w-{unique}-{len(engines)}", **options}
        engine = SagaEngine(database_url, sagas, **settings)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.close()
