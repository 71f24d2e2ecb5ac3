"""The SQLAlchemy engine for a SQLite file: WAL, BEGIN IMMEDIATE for writers, the inline driver.

:class:`~cloudphone.saga.store.database.Database` builds it (and adds the in-process writer
lock); ``bench/`` builds it directly to compare drivers.
"""

from __future__ import annotations

import sqlite3
import weakref
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from cloudphone.saga.store import sqlite_inline

READ_ONLY = "cloudphone_read_only"
"""Execution option of a read-only transaction (plain ``BEGIN``, no writer lock)."""

INLINE_ENGINES: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()
"""SQLite engines on the inline driver (connections are ``InlineConnection``): busy timeouts."""


def create_sqlite_engine(url: URL, busy_timeout_ms: int, *, threaded: bool = False) -> AsyncEngine:
    """The engine :class:`Database` builds for a SQLite file.

    Args:
        url: ``sqlite+aiosqlite:///path.db``.
        busy_timeout_ms: How long to wait for another process's write lock.
        threaded: SQLAlchemy's stock aiosqlite driver (a helper thread per connection)
            instead of the inline one; for comparison (``bench/engine.py --sqlite-driver``).
    """
    database = url.database or ""
    if database in ("", ":memory:") or "mode=memory" in str(url):
        raise ValueError(
            "SQLite needs a file (sqlite+aiosqlite:///path/to.db): workers, the API and the CLI "
            "share it, which an in-memory database cannot do"
        )
    if threaded:
        engine = create_async_engine(
            url,
            pool_size=5,
            max_overflow=5,
            hide_parameters=True,
            connect_args={"timeout": busy_timeout_ms / 1000},
        )
    else:
        # Same SQLite, no helper thread: see sqlite_inline for why.
        async def connect() -> sqlite_inline.InlineConnection:
            return await sqlite_inline.connect(database, busy_timeout=busy_timeout_ms / 1000)

        engine = create_async_engine(
            url, pool_size=5, max_overflow=5, hide_parameters=True, async_creator=connect
        )
        INLINE_ENGINES[engine.sync_engine] = busy_timeout_ms / 1000
    busy_pragma = busy_timeout_ms if threaded else 0

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so BEGIN IMMEDIATE is ours to send.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in sqlite_pragmas(busy_pragma):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the lock up front: a deferred transaction that later writes can fail
        # with SQLITE_BUSY without waiting, when another connection wrote in between.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"
        driver = conn.connection.driver_connection
        if isinstance(driver, sqlite_inline.InlineConnection):
            # Straight to sqlite3 (busy retried by the driver): a statement through
            # SQLAlchemy's execution costs more than the BEGIN itself.
            try:
                await_only(driver.run(partial(driver.sqlite.execute, begin), read=False))
            except sqlite3.Error as error:
                # Wrapped as SQLAlchemy wraps a statement's error (callers look for that).
                raise sa_exc.DBAPIError.instance(begin, None, error, sqlite3.Error) from error
        else:
            conn.exec_driver_sql(begin)

    return engine


def sqlite_pragmas(busy_timeout_ms: int = 0) -> tuple[str, ...]:
    """What every connection to an engine's SQLite file runs first."""
    return (
        "PRAGMA journal_mode=WAL",
        # WAL + NORMAL: a killed process loses nothing committed; only an OS crash or power
        # loss may drop the last commits (never corrupting). Steps are idempotent by contract.
        "PRAGMA synchronous=NORMAL",
        # The inline driver retries without blocking the loop; aiosqlite waits on its thread.
        f"PRAGMA busy_timeout={busy_timeout_ms}",
        "PRAGMA foreign_keys=ON",
    )
