"""The Alembic migrations build exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from cloudphone import schema
from tests.support.databases import fresh_database
from tests.support.server import child_env


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (a new PostgreSQL database, or a new SQLite file)."""
    with fresh_database(request.param, tmp_path, "cloudphone_migrate") as url:
        yield url


def schema_diff(url: str) -> list[Any]:
    """What Alembic autogenerate would change to make the database match the declared tables."""
    engine = sa.create_engine(schema.sync_url(url))
    try:
        with engine.connect() as conn:
            metadata = schema.all_metadata()
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "target_metadata": metadata}
            )
            return list(compare_metadata(context, metadata))  # type: ignore[arg-type]
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    """Tables present in the database."""
    engine = sa.create_engine(schema.sync_url(url))
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_migrated_schema_equals_the_declared_tables(empty_url: str) -> None:
    """After upgrade head, autogenerate finds nothing to add, drop or alter."""
    schema.upgrade(empty_url)
    assert schema.current_revision(empty_url) == schema.head_revision()
    assert schema_diff(empty_url) == []
    declared = {table for metadata in schema.all_metadata() for table in metadata.tables}
    assert table_names(empty_url) == declared | {"alembic_version"}


def test_downgrade_to_base_and_back_up(empty_url: str) -> None:
    """Every migration can be reverted, and re-applied afterwards."""
    schema.upgrade(empty_url)
    command.downgrade(schema.alembic_config(empty_url), "base")
    assert table_names(empty_url) <= {"alembic_version"}
    assert schema.current_revision(empty_url) is None
    schema.upgrade(empty_url)
    assert schema_diff(empty_url) == []


def test_upgrading_twice_changes_nothing(empty_url: str) -> None:
    """A second upgrade (every serve/worker start runs one) is a no-op."""
    schema.upgrade(empty_url)
    schema.upgrade(empty_url)
    assert schema.current_revision(empty_url) == schema.head_revision()


def test_threads_migrating_at_once_take_turns(empty_url: str) -> None:
    """Concurrent upgrades in one process (Alembic's context is process-global) all succeed."""
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            schema.upgrade(empty_url)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert schema_diff(empty_url) == []


def test_processes_starting_together_migrate_one_after_the_other(
    empty_url: str, tmp_path: Path
) -> None:
    """Three `cloudphone db upgrade` processes at once (workers starting together) succeed."""
    env = child_env(tmp_path / "var", empty_url)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "cloudphone", "db", "upgrade"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [child.communicate(timeout=60)[0].decode() for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], outputs
    assert schema_diff(empty_url) == []


def test_every_migration_is_self_contained() -> None:
    """Migrations name plain SQLAlchemy types, never cloudphone's (code moves; history stays)."""
    for script in sorted((schema.MIGRATIONS_DIR / "versions").glob("*.py")):
        assert "cloudphone." not in script.read_text(), f"{script.name} imports cloudphone code"


APPLICATIONS = sa.table(
    "applications",
    *(sa.column(name) for name in ("id", "package_name", "version_code", "size", "sha256")),
    *(sa.column(name) for name in ("object_key", "status", "is_latest", "uploaded_by")),
    sa.column("saga_id"),
    sa.column("permissions", sa.JSON),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
"""The ``applications`` columns every apps revision has (for rows written before 0005)."""


def test_the_apps_catalog_revision_makes_existing_uploads_private(empty_url: str) -> None:
    """Nothing is published on anyone's behalf; a downgrade restores the global latest."""
    script = ScriptDirectory.from_config(schema.alembic_config())
    catalog = next(r for r in script.walk_revisions() if r.doc.startswith("Apps catalog"))
    assert isinstance(catalog.down_revision, str)
    config = schema.alembic_config(empty_url)
    command.upgrade(config, catalog.down_revision)
    now = datetime.now(UTC)
    rows = [
        {"id": f"app-{v}", "package_name": "com.example.m", "version_code": v, "size": 1,
         "sha256": "0" * 64, "object_key": f"k{v}", "status": "AVAILABLE", "is_latest": v == 2,
         "uploaded_by": "alice", "saga_id": f"s{v}", "permissions": [], "created_at": now,
         "updated_at": now}
        for v in (1, 2)
    ]  # fmt: skip
    engine = sa.create_engine(schema.sync_url(empty_url))
    try:
        with engine.begin() as conn:
            conn.execute(APPLICATIONS.insert(), rows)
        command.upgrade(config, catalog.revision)
        query = sa.text("SELECT id, is_latest, published_at FROM applications ORDER BY id")
        with engine.connect() as conn:
            assert [tuple(r) for r in conn.execute(query)] == [
                ("app-1", False, None),
                ("app-2", False, None),
            ]
        command.downgrade(config, catalog.down_revision)
        with engine.connect() as conn:
            latest = sa.text("SELECT id, is_latest FROM applications ORDER BY id")
            assert [tuple(r) for r in conn.execute(latest)] == [("app-1", False), ("app-2", True)]
    finally:
        engine.dispose()
