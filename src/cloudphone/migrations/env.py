"""Alembic environment: migrates every MetaData in ``cloudphone.schema.all_metadata()``.

The URL comes from, in order: ``config.attributes["url"]`` (``cloudphone db upgrade``),
``-x url=…`` on the alembic command line, or the platform settings
(``CLOUDPHONE_DATABASE_URL``). Migrations run through a synchronous driver; on PostgreSQL an
advisory lock makes processes that start together migrate one after the other.
"""

from __future__ import annotations

from typing import Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import JSON, Connection, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from cloudphone.saga.store.types import UtcDateTime
from cloudphone.schema import ADVISORY_LOCK_KEY, all_metadata, sync_url

config = context.config
target_metadata = all_metadata()


def _database_url() -> URL:
    given = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if given:
        return make_url(given)
    from cloudphone.settings import load_settings

    return make_url(load_settings().database_url)


def _render_item(kind: str, obj: object, autogen: AutogenContext) -> str | Literal[False]:
    """Write the platform's column types as plain SQLAlchemy ones in new migrations.

    A migration must not import application code (it would break when that code moves), and
    Alembic's default rendering of these types does not even import what it names.
    """
    if kind != "type":
        return False
    if isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, JSON):
        autogen.imports.add("from sqlalchemy.dialects import postgresql")
        null = "none_as_null=True" if obj.none_as_null else ""
        return f'sa.JSON({null}).with_variant(postgresql.JSONB({null}), "postgresql")'
    return False


def _configure(**options: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_item=_render_item,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        **options,  # type: ignore[arg-type]
    )


def run_offline() -> None:
    """Emit SQL to stdout instead of running it (``alembic upgrade --sql``)."""
    _configure(url=sync_url(_database_url()), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


def run_online() -> None:
    """Migrate the database, holding the advisory lock on PostgreSQL."""
    engine = create_engine(sync_url(_database_url()), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if connection.dialect.name != "postgresql":
                _migrate(connection)
                return
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            connection.commit()
            try:
                _migrate(connection)
            finally:
                connection.rollback()
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
                connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
