"""Fixtures shared by every suite: databases on SQLite and PostgreSQL, unique names."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudphone.saga import Saga, SagaEngine
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.leaks import SHARED_DATABASE_FIXTURES, check_shared

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "leaves_runs(why): the test leaves active runs no worker can claim (retired quietly)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item (the leak check spares tests that failed)."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.fixture(autouse=True)
def no_active_runs_left(request: pytest.FixtureRequest, unique: str) -> Iterator[None]:
    """Retire the runs a test leaves active on a shared database; fail it if others could run them.

    Set up before the test's own fixtures, so this runs after its engines, workers and
    servers have stopped; ``unique`` is the test's own (saga types named with it are private).
    See tests/support/leaks.py.
    """
    yield
    for name in SHARED_DATABASE_FIXTURES:
        if name not in request.fixturenames:
            continue
        left = check_shared(request.getfixturevalue(name), request.node.nodeid, unique)
        reports = request.node.stash.get(_REPORTS, {})
        expected = request.node.get_closest_marker("leaves_runs") is not None
        if left and not expected and all(r.passed for r in reports.values()):
            listed = "\n  ".join(str(run) for run in left)
            pytest.fail(f"runs left active on the shared database {name}:\n  {listed}")


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


@pytest.fixture
def restore_cli_logging() -> Iterator[None]:
    """The CLI configures logging on the (swapped) stderr; undo it after each test.

    Modules that run the CLI in process use it: ``pytest.mark.usefixtures("restore_cli_logging")``.
    """
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler.get_name() == "cloudphone":
            root.removeHandler(handler)
