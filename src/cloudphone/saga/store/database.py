"""One database handle for the engine and the services that share its transactions.

PostgreSQL gets a connection pool that survives a server restart by itself: a pooled
connection the server closed is replaced when it is checked out (asyncpg notices the close
while the connection is idle, so this costs no round trip), and any connection-class error
(see :mod:`.disconnects`) invalidates the connection and every older one in the pool. A
connection that cannot be made raises :class:`~cloudphone.saga.errors.DatabaseUnavailableError`.

SQLite (the embedded default) gets WAL, a busy timeout, ``BEGIN IMMEDIATE`` for writes and an
in-process lock, so this process is a single writer and never trips over SQLite's
lock-upgrade deadlock. A task that already holds that lock (a transactional step) and opens a
second write transaction is told so at once (:class:`NestedWriteError`) instead of waiting for
itself. Statements run inline on the event loop (see :mod:`.sqlite_inline`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import (
    URL,
    Connection,
    Dialect,
    Engine,
    ExceptionContext,
    Transaction,
    make_url,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util.concurrency import greenlet_spawn

from cloudphone.saga.errors import DatabaseUnavailableError, NestedWriteError, StepGroupAborted
from cloudphone.saga.store import sqlite_inline
from cloudphone.saga.store.disconnects import (
    CONNECT_TIMEOUT,
    driver_error_unavailable,
    is_database_unavailable,
    unavailable,
)
from cloudphone.saga.store.sqlite_engine import (
    INLINE_ENGINES,
    READ_ONLY,
    create_sqlite_engine,
)


@dataclass
class _Mark:
    """Set in a ContextVar while a block runs.

    Tasks started inside keep a copy of the variable, so ``open`` tells them whether the
    block is still running.
    """

    file: str | None = None
    open: bool = True


@contextmanager
def _marking(var: ContextVar[_Mark | None], mark: _Mark) -> Iterator[None]:
    token = var.set(mark)
    try:
        yield
    finally:
        mark.open = False
        var.reset(token)


def _marked(var: ContextVar[_Mark | None]) -> _Mark | None:
    """The mark of the block this task runs in (or was started from), while it runs."""
    mark = var.get()
    return mark if mark is not None and mark.open else None


_SHARING: ContextVar[_Mark | None] = ContextVar("cloudphone_step_group", default=None)
"""Set while a transactional step runs in a shared transaction (a PostgreSQL step group)."""


def sharing_transaction() -> AbstractContextManager[None]:
    """Mark this task (and the tasks it starts) as running a step in a shared transaction.

    Inside, :meth:`Database.begin` on PostgreSQL raises StepGroupAborted: a write
    transaction of the step's own could wait for a row lock that another member of the
    group holds, which waits for this step; the step runs again in a transaction of its own,
    where opening another one means what it always did.
    """
    return _marking(_SHARING, _Mark())


_WRITING: ContextVar[_Mark | None] = ContextVar("cloudphone_sqlite_writing", default=None)
"""Set while this task holds a SQLite file's write transaction (``file``: which one)."""


class Database:
    """An async SQLAlchemy engine plus the rules for writing to it.

    Args:
        url: ``postgresql+asyncpg://…``, ``postgresql+psycopg://…`` or
            ``sqlite+aiosqlite:///path.db``; or an existing AsyncEngine to share.
        pool_size: Pooled connections kept open (PostgreSQL). Transactional steps and API
            requests beyond it wait for a free connection.
        max_overflow: Extra connections allowed under load (PostgreSQL). They are closed when
            returned, so a busy worker would pay a new connection per step: keep it small.
        busy_timeout_ms: How long SQLite waits for another process's write lock (without
            blocking the event loop); past it the write raises DatabaseUnavailableError.
    """

    def __init__(
        self,
        url: str | URL | AsyncEngine,
        *,
        pool_size: int = 20,
        max_overflow: int = 0,
        busy_timeout_ms: int = 30_000,
    ) -> None:
        if isinstance(url, AsyncEngine):
            self.engine = url
            self._url = url.url
            self._owns_engine = False
        else:
            self._url = make_url(url)
            self.engine = _create_engine(self._url, pool_size, max_overflow, busy_timeout_ms)
            self._owns_engine = True
        self.dialect: str = self.engine.dialect.name
        if self.dialect not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported database {self.dialect!r}: use PostgreSQL or SQLite")
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._file = os.path.realpath(self._url.database or "") if self._write_lock else ""

    @property
    def url(self) -> URL:
        """The URL as given (the password is hidden when rendered as a string).

        For SQLite it keeps the public ``sqlite+aiosqlite`` name; the connections underneath
        are the inline driver's (see ``sqlite_inline``).
        """
        return self._url

    @property
    def is_postgres(self) -> bool:
        """True on PostgreSQL."""
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: commits when the block ends, rolls back if it raises.

        Raises:
            NestedWriteError: SQLite, and this task (or the task that started it) is inside
                a write transaction of the same file already: the new one would wait for it
                forever. Write through the open transaction's connection instead.
            DatabaseUnavailableError: SQLite, and another process held the write lock past
                the busy timeout (the engine waits that out as an outage).
            StepGroupAborted: PostgreSQL, inside a transactional step that shares its
                transaction with other runs' steps: the engine catches it and runs the step
                again in a transaction of its own, where this call goes through.
        """
        if self._write_lock is None:
            if _marked(_SHARING) is not None:
                raise StepGroupAborted()
            async with _transaction(self.engine) as conn:
                yield conn
            return
        async with self.writer():
            try:
                async with _transaction(self.engine) as conn:
                    yield conn
            except Exception as error:
                busy = self.busy_error(getattr(error, "orig", None) or error)
                if busy is not None:
                    raise busy from error
                raise

    @asynccontextmanager
    async def writer(self) -> AsyncIterator[None]:
        """SQLite: hold this process's writer lock (the task is then :meth:`writing`).

        :meth:`begin` holds it around its transaction; the engine's own group commit (see
        :mod:`.lite_fast`) holds it around the transactions it sends itself.

        Raises:
            NestedWriteError: This task holds it already (see :meth:`begin`).
        """
        assert self._write_lock is not None, "SQLite only"
        self.refuse_nested()
        async with self._write_lock:
            with _marking(_WRITING, _Mark(self._file)):
                yield

    def refuse_nested(self) -> None:
        """Raise NestedWriteError if this task is inside a write transaction of this file."""
        if self.writing():
            raise NestedWriteError(
                f"this task already holds the write transaction of the SQLite file {self._file} "
                "(a transactional step's ctx.session, or an outer Database.begin()); SQLite "
                "has one writer, so a second write transaction would wait for it forever: "
                "write through the open transaction's connection (engine.start(..., "
                "session=ctx.session), a service call given that connection)"
            )

    def busy_error(self, error: BaseException) -> DatabaseUnavailableError | None:
        """The error to raise for a sqlite3 ``error`` that says another process held the lock."""
        if not sqlite_inline.sqlite_busy(error):
            return None
        return DatabaseUnavailableError(
            f"another process held the write lock of {self._file} past the busy timeout: {error}"
        )

    @property
    def inline_sqlite(self) -> tuple[str, float] | None:
        """SQLite on the inline driver: the file's path and the busy timeout (s); else None."""
        patience = INLINE_ENGINES.get(self.engine.sync_engine)
        return None if patience is None else (self._file, patience)

    def writing(self) -> bool:
        """Whether this task is inside a write transaction of this SQLite file.

        True within :meth:`begin` (a transactional step's ``ctx.session`` included), also in
        tasks started from there while it is open; always False on PostgreSQL, where
        concurrent write transactions do not wait for each other as a whole.
        """
        writing = _marked(_WRITING)
        return writing is not None and writing.file == self._file

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (on SQLite it does not take the write lock)."""
        async with _transaction(self.engine, read_only=True) as conn:
            yield conn

    async def dispose(self) -> None:
        """Close pooled connections (only if this object created the engine)."""
        if self._owns_engine:
            await self.engine.dispose()


@asynccontextmanager
async def _transaction(
    engine: AsyncEngine, read_only: bool = False
) -> AsyncIterator[AsyncConnection]:
    """``engine.begin()`` in two greenlet hops: checkout and BEGIN, then COMMIT and checkin.

    SQLAlchemy's own takes five (connect, begin, the transaction's exit, close) and a task to
    run the close in; a transactional step pays them all. The block's end is the same: the
    transaction begun here commits (rolls back if the block raised), then the connection goes
    back to the pool, which rolls back anything begun after that commit.
    """
    sync, transaction = await greenlet_spawn(_open, engine.sync_engine, read_only)
    conn = AsyncConnection(engine, sync)
    try:
        yield conn
    except BaseException:
        await _to_completion(greenlet_spawn(_end, sync, transaction, False))
        raise
    await greenlet_spawn(_end, sync, transaction, True)


def _open(engine: Engine, read_only: bool) -> tuple[Connection, Transaction]:
    conn = engine.connect()
    try:
        if read_only:
            conn.execution_options(**{READ_ONLY: True})
        return conn, conn.begin()
    except BaseException:
        conn.close()
        raise


def _end(conn: Connection, transaction: Transaction, commit: bool) -> None:
    try:
        if transaction.is_active:
            if commit:
                transaction.commit()
            else:
                transaction.rollback()
    finally:
        conn.close()


async def _to_completion(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to its end even if this task is cancelled meanwhile (then re-raise)."""
    task = asyncio.ensure_future(cleanup)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as error:
            cancelled = error
    if cancelled is not None:
        raise cancelled
    task.result()


def _create_engine(
    url: URL, pool_size: int, max_overflow: int, busy_timeout_ms: int
) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        return create_sqlite_engine(url, busy_timeout_ms)
    asyncpg = url.get_driver_name() == "asyncpg"
    # psycopg learns that the server closed a connection only when it next uses it, so its
    # pool pings on checkout (a round trip); asyncpg's is_closed() check below is free.
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        # A failing statement's error (recorded as a step's failure, logged) names no value.
        hide_parameters=True,
        pool_pre_ping=not asyncpg,
        # An unreachable server fails a connect in seconds (the default waits a minute).
        connect_args={"timeout": CONNECT_TIMEOUT}
        if asyncpg
        else {"connect_timeout": int(CONNECT_TIMEOUT)},
    )
    _survive_restarts(engine)
    return engine


def _survive_restarts(engine: AsyncEngine) -> None:
    """Replace dead pooled connections, and report an unreachable server as unavailable."""

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.loaded_dbapi.connect(*cargs, **cparams)
        except Exception as error:
            # asyncpg's refused connect (OSError) and "starting up" (57P03) would otherwise
            # escape SQLAlchemy unwrapped.
            if isinstance(error, OSError) or driver_error_unavailable(error):
                raise unavailable(error, "connect") from error
            raise

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(
        dbapi_conn: Any, _record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        is_closed = getattr(dbapi_conn.driver_connection, "is_closed", None)
        if is_closed is not None and is_closed():
            raise sa_exc.DisconnectionError("the server closed this pooled connection")

    @event.listens_for(engine.sync_engine, "handle_error")
    def _classify(context: ExceptionContext) -> None:
        if not context.is_disconnect and is_database_unavailable(context.original_exception):
            # Invalidate this connection and every older one in the pool (they died with it).
            context.is_disconnect = True
