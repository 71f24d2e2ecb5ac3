"""The database schema: every table the code declares, and the Alembic migrations that build it.

Each part of the platform owns a SQLAlchemy ``MetaData``: the engine's is
``cloudphone.saga.store.tables.metadata``, each service adds its own in :func:`all_metadata`.
The migrations in ``cloudphone/migrations/`` (shipped inside the package) create exactly
those tables; a test compares the two on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from cloudphone.extras import require_extra

log = logging.getLogger("cloudphone.schema")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""The Alembic scripts, shipped inside the package (so an installed wheel can migrate)."""

ADVISORY_LOCK_KEY = 7_291_433_019
"""PostgreSQL advisory lock held while migrating, so processes starting together take turns."""

_IN_PROCESS = threading.Lock()
"""Alembic keeps its running context in module globals: one migration per process at a time
(processes take turns through the database or file lock)."""

_SYNC_DRIVERS = {
    "sqlite+aiosqlite": "sqlite+pysqlite",
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
}


def all_metadata() -> list[MetaData]:
    """Every MetaData whose tables the migrations must create, engine first.

    Services: append your ``MetaData`` here (one line each) when you add tables, then write a
    migration (``alembic revision --autogenerate -m "…"`` from the repo root).
    """
    from cloudphone.apps.models import metadata as apps_metadata
    from cloudphone.billing.models import metadata as billing_metadata
    from cloudphone.deployment import metadata as deployment_metadata
    from cloudphone.devices.models import metadata as devices_metadata
    from cloudphone.installs.models import metadata as installs_metadata
    from cloudphone.saga.store.tables import metadata as saga_metadata

    return [
        saga_metadata,
        billing_metadata,
        apps_metadata,
        devices_metadata,
        deployment_metadata,
        installs_metadata,
    ]


def sync_url(url: str | URL) -> URL:
    """The same database through a synchronous driver (Alembic runs synchronously).

    Raises:
        MissingExtraError: PostgreSQL without the ``postgres`` extra (psycopg).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        require_extra("postgres", needed_for="a PostgreSQL database")
    driver = _SYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=driver)


def alembic_config(database_url: str | URL | None = None) -> Config:
    """An Alembic config on :data:`MIGRATIONS_DIR`, targeting ``database_url`` if given."""
    if not (MIGRATIONS_DIR / "env.py").exists():
        raise FileNotFoundError(
            f"no Alembic scripts at {MIGRATIONS_DIR}; the cloudphone package is incomplete"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url is not None:
        config.attributes["url"] = make_url(database_url)
    return config


def upgrade(database_url: str | URL, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (blocking; run it in a thread from async code)."""
    url = make_url(database_url)
    with _IN_PROCESS, _migration_lock(url):
        before = current_revision(url)
        command.upgrade(alembic_config(url), revision)
        after = current_revision(url)
    if after != before:
        log.info(
            "database migrated",
            extra={
                "from_revision": before,
                "to_revision": after,
                "database": url.render_as_string(hide_password=True),
            },
        )


def head_revision() -> str | None:
    """The newest migration's revision id."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(database_url: str | URL) -> str | None:
    """The revision the database is at (None before the first upgrade)."""
    engine = create_engine(sync_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


@contextlib.contextmanager
def _migration_lock(url: URL) -> Iterator[None]:
    """On SQLite, a file lock next to the database (PostgreSQL locks in ``env.py``)."""
    if url.get_backend_name() != "sqlite" or not url.database:
        yield
        return
    path = Path(url.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".migrate-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
