"""SQLite for SQLAlchemy's asyncio engine, run inline on the event loop.

aiosqlite runs every call on a helper thread; on small VMs each hop costs a context switch of
100-300 µs, so one transaction costs milliseconds while SQLite itself needs microseconds. This
module gives SQLAlchemy's aiosqlite dialect a driver with aiosqlite's shape whose coroutines run
``sqlite3`` directly and return at once.

The one call that could block long is waiting for another process's write lock, so the busy
timeout is not left to SQLite: a busy answer is retried with ``asyncio.sleep`` until
``BUSY_TIMEOUT`` has passed (retrying is safe: SQLite reports busy before a statement changes
anything, and a busy COMMIT leaves the transaction open to be committed again).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)

BUSY_TIMEOUT = 30.0
"""Default seconds to keep retrying while another process holds SQLite's write lock."""

T = TypeVar("T")


async def _patiently(call: Callable[[], T], patience: float) -> T:
    """Run a sqlite3 call; while the database is busy, yield to the loop and try again."""
    delay = 0.001
    deadline = time.monotonic() + patience
    while True:
        try:
            return call()
        except sqlite3.OperationalError as error:
            message = str(error)
            busy = "database is locked" in message or "database is busy" in message
            if not busy or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


class InlineCursor:
    """aiosqlite.Cursor's interface over a sqlite3 cursor."""

    def __init__(self, cursor: sqlite3.Cursor, patience: float) -> None:
        self._cursor = cursor
        self._patience = patience

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        """Column description of the last statement."""
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        """Row id of the last insert."""
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        """Rows fetchmany returns by default."""
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        """Run one statement."""
        await _patiently(lambda: self._cursor.execute(sql, parameters), self._patience)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        """Run one statement for each parameter set."""
        rows = list(parameters)
        await _patiently(lambda: self._cursor.executemany(sql, rows), self._patience)
        return self

    async def fetchone(self) -> Any:
        """Next row, or None."""
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` rows."""
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        """Remaining rows."""
        return self._cursor.fetchall()

    async def close(self) -> None:
        """Close the cursor."""
        self._cursor.close()


class _InlineQueue:
    """Stands in for aiosqlite's request queue, which SQLAlchemy uses to set isolation_level."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as error:
            future.set_exception(error)


class InlineConnection:
    """aiosqlite.Connection's interface over a sqlite3 connection, without a thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], patience: float) -> None:
        self._connector = connector
        self._patience = patience
        self._conn: sqlite3.Connection | None = None
        self._connection: sqlite3.Connection | None = None
        self._tx = _InlineQueue()
        self._thread = SimpleNamespace(daemon=True)  # SQLAlchemy marks aiosqlite's thread

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._open().__await__()

    async def _open(self) -> InlineConnection:
        self._conn = self._connection = self._connector()
        return self

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("no active connection")
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        """sqlite3's transaction control (None: the caller sends BEGIN itself)."""
        return self._live().isolation_level

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open."""
        return self._live().in_transaction

    def cursor(self) -> InlineCursor:
        """A new cursor."""
        return InlineCursor(self._live().cursor(), self._patience)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        """Run one statement on a new cursor."""
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        """Commit (retried while another process holds the lock)."""
        await _patiently(self._live().commit, self._patience)

    async def rollback(self) -> None:
        """Roll back."""
        self._live().rollback()

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = self._connection = None

    def stop(self) -> None:
        """Close at once (SQLAlchemy's terminate)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = self._connection = None

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        """Register a SQL function."""
        self._live().create_function(*args, **kwargs)


def connect(
    database: str, *, busy_timeout: float = BUSY_TIMEOUT, **kwargs: Any
) -> InlineConnection:
    """aiosqlite.connect's shape: an awaitable connection.

    Args:
        database: Path of the database file.
        busy_timeout: Seconds to retry while another process holds the write lock.
        **kwargs: Passed to ``sqlite3.connect`` (its own busy timeout is set to zero).
    """
    kwargs.pop("loop", None)
    kwargs["timeout"] = 0  # never block the event loop waiting for a lock; we retry instead
    return InlineConnection(lambda: sqlite3.connect(database, **kwargs), busy_timeout)


_DRIVER = SimpleNamespace(
    connect=connect,
    Connection=InlineConnection,
    DatabaseError=sqlite3.DatabaseError,
    Error=sqlite3.Error,
    IntegrityError=sqlite3.IntegrityError,
    NotSupportedError=sqlite3.NotSupportedError,
    OperationalError=sqlite3.OperationalError,
    ProgrammingError=sqlite3.ProgrammingError,
    sqlite_version=sqlite3.sqlite_version,
    sqlite_version_info=sqlite3.sqlite_version_info,
)


class SQLiteDialect_inline(SQLiteDialect_aiosqlite):
    """SQLAlchemy's aiosqlite dialect with the inline driver underneath."""

    driver = "cloudphone_inline"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> AsyncAdapt_aiosqlite_dbapi:
        """The inline driver, adapted the way SQLAlchemy adapts aiosqlite."""
        return AsyncAdapt_aiosqlite_dbapi(_DRIVER, sqlite3)  # type: ignore[arg-type]


dialect = SQLiteDialect_inline
