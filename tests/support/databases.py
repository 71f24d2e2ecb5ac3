"""Test databases: a fresh SQLite file per test, one PostgreSQL database per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def postgres_admin_url() -> str:
    """Server to create test databases on (``CLOUDPHONE_TEST_POSTGRES_URL``)."""
    return os.environ.get("CLOUDPHONE_TEST_POSTGRES_URL", DEFAULT_POSTGRES)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_postgres_database(prefix: str = "cloudphone_test") -> str:
    """Create an empty database; returns its SQLAlchemy URL (same driver as the admin URL)."""
    admin = postgres_admin_url()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by create_postgres_database, disconnecting its clients."""
    name = make_url(url).database
    with psycopg.connect(_libpq(postgres_admin_url()), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(kind: str, directory: Path, prefix: str) -> Iterator[str]:
    """A database with no tables: a new SQLite file, or (``postgres``) a new PostgreSQL one.

    The PostgreSQL database is dropped afterwards; the SQLite file lives in ``directory``.
    """
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / f'{prefix}.db'}"
        return
    url = create_postgres_database(prefix)
    try:
        yield url
    finally:
        drop_postgres_database(url)
