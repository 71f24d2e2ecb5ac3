"""SQLite fast path: the engine's hot writes on sqlite3 itself, grouped into shared transactions.

The statements are :mod:`.lite`'s Core statements compiled once for the engine's dialect and
run on the inline driver's sqlite3 connection, their parameters converted by the very bind
processors of the column types that SQLAlchemy would apply, so every read path reads them back
as before. What is skipped is SQLAlchemy's work per statement (cache key, compiled-cache
lookup, parameter processing, result set-up) and, for the writes of their own, the greenlet
hops of a :meth:`.Database.begin`.

Group commit: progress writes and starts that queue while this process's writer lock is held
(by a transactional step, or by the previous group) go out together in one ``BEGIN IMMEDIATE``
… ``COMMIT`` on the fast path's own connection, under that same lock. Each item is still fenced
by its own epoch and ``last_seq`` (a fenced item answers None, which the store explains as
alone, see :mod:`.reconcile`). A batch whose transaction fails on a data error is rolled back
and each item is sent again alone, so one bad item cannot fail or lose the others; another
process holding the file past the busy timeout fails the batch as DatabaseUnavailableError,
which the runners wait out and write again (fenced, so safe).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

from sqlalchemy import insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.ports import Clock
from cloudphone.saga.progress import NewEvent, Progress
from cloudphone.saga.records import EventKind, SagaRun
from cloudphone.saga.store import lite, sqlite_inline
from cloudphone.saga.store.base import ClaimRequest
from cloudphone.saga.store.batch import Batcher
from cloudphone.saga.store.database import Database
from cloudphone.saga.store.disconnects import is_database_unavailable, unavailable
from cloudphone.saga.store.lite import Prepared
from cloudphone.saga.store.lite_claims import Claims
from cloudphone.saga.store.rows import event_rows
from cloudphone.saga.store.sqlite_engine import sqlite_pragmas
from cloudphone.saga.store.tables import saga_events

Written = tuple[bool, int]
"""A progress write that applied: the run's cancel_requested and its new last_seq."""
Write = Callable[[sqlite3.Connection, datetime], object]
"""One queued item: runs its statements in the group's transaction, given the lease end."""


class Statements:
    """The hot path's statements for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.commit = Prepared(lite.COMMIT, dialect)
        self.insert_run = Prepared(lite.INSERT_RUN, dialect)
        self.insert_events = Prepared(insert(saga_events), dialect)
        self.claims = Claims(dialect)

    def write_commit(
        self,
        sq: sqlite3.Connection,
        run_id: str,
        epoch: int,
        progress: Progress,
        until: datetime,
        seq: int | None,
    ) -> Written | None:
        """Apply ``progress`` in ``sq``'s transaction; None if fenced off (epoch or ``seq``)."""
        params = lite.commit_params(run_id, epoch, progress, until, seq)
        rows = sq.execute(self.commit.sql, self.commit.args(params)).fetchall()
        if not rows:
            return None
        last_seq, cancel_requested = rows[0]
        n = len(progress.events)
        if n:
            self.events(sq, event_rows(run_id, last_seq - n + 1, progress.events))
        return bool(cancel_requested), int(last_seq)

    def write_insert(
        self, sq: sqlite3.Connection, values: Mapping[str, Any], detail: dict[str, Any]
    ) -> bool:
        """Insert a run and its start event in ``sq``'s transaction; False if its key exists."""
        args = self.insert_run.args(lite.insert_params(dict(values)))
        if not sq.execute(self.insert_run.sql, args).fetchall():
            return False
        started = NewEvent(EventKind.SAGA_STARTED, at=values["created_at"], detail=detail)
        self.events(sq, event_rows(values["id"], 1, [started]))
        return True

    def events(self, sq: sqlite3.Connection, rows: list[dict[str, Any]]) -> None:
        """Insert ``saga_events`` rows in ``sq``'s transaction."""
        prepared = self.insert_events
        if len(rows) == 1:
            sq.execute(prepared.sql, prepared.args(rows[0]))
        else:
            sq.executemany(prepared.sql, [prepared.args(row) for row in rows])


def inline_of(conn: AsyncConnection) -> sqlite_inline.InlineConnection | None:
    """The inline driver's connection under ``conn`` if a transaction is open on it, or None.

    Without one, SQLAlchemy would begin a transaction for the first statement (which sqlite3
    alone would commit at once): that statement goes through SQLAlchemy.
    """
    sync = conn.sync_connection
    if sync is None or sync.closed or sync.invalidated or not sync.in_transaction():
        return None
    driver = sync.connection.driver_connection
    if not isinstance(driver, sqlite_inline.InlineConnection) or not driver.in_transaction:
        return None
    return driver


def _is_fatal(error: BaseException) -> bool:
    """The file is busy (or the batch was interrupted): items alone would fail the same way."""
    return not isinstance(error, sqlite3.Error) or is_database_unavailable(error)


class LiteFastPath:
    """Progress writes and starts on sqlite3 directly, grouped into shared transactions.

    Args:
        db: The database (SQLite on the inline driver, see :attr:`.Database.inline_sqlite`).
        lease: Lease length, to stamp ``lease_expires_at`` on progress that keeps the lease.
        clock: Time source; lease ends are taken once the writer lock is held.
    """

    def __init__(self, db: Database, lease: timedelta, clock: Clock) -> None:
        inline = db.inline_sqlite
        assert inline is not None, "SQLite on the inline driver only"
        self._db = db
        self._file, self._patience = inline
        self._lease = lease
        self._clock = clock
        self.statements = Statements(db.engine.dialect)
        self._conn: sqlite_inline.InlineConnection | None = None
        self._batch: Batcher[Write, object] = Batcher(
            self._flush, is_fatal=_is_fatal, gate=self._gate
        )
        self.transactions = 0
        """Write transactions this fast path committed (the benchmark counts them)."""

    async def commit(
        self, run_id: str, epoch: int, progress: Progress, seq: int | None = None
    ) -> Written | None:
        """Commit progress with the next group; None if fenced off (epoch or ``seq``)."""

        def write(sq: sqlite3.Connection, until: datetime) -> Written | None:
            return self.statements.write_commit(sq, run_id, epoch, progress, until, seq)

        return cast("Written | None", await self._submit(write, "progress write"))

    async def insert(self, values: Mapping[str, Any], detail: dict[str, Any]) -> bool:
        """Insert a run with the next group; False when its idempotency key exists."""

        def write(sq: sqlite3.Connection, _until: datetime) -> bool:
            return self.statements.write_insert(sq, values, detail)

        return bool(await self._submit(write, "start"))

    async def claim(self, request: ClaimRequest) -> list[tuple[SagaRun, str | None]]:
        """Lease due runs with the next group (see ``SqlStore.claim``)."""

        def write(sq: sqlite3.Connection, until: datetime) -> list[tuple[SagaRun, str | None]]:
            return self.statements.claims.claim(sq, self.statements.events, until, request)

        return cast("list[tuple[SagaRun, str | None]]", await self._submit(write, "claim"))

    async def commit_in(
        self,
        driver: sqlite_inline.InlineConnection,
        run_id: str,
        epoch: int,
        progress: Progress,
        seq: int | None = None,
    ) -> Written | None:
        """Commit progress in ``driver``'s open transaction (a step's, see :func:`inline_of`)."""
        until = self._clock.now() + self._lease
        return await driver.run(
            lambda: self.statements.write_commit(
                driver.sqlite, run_id, epoch, progress, until, seq
            ),
            read=False,
        )

    async def insert_in(
        self,
        driver: sqlite_inline.InlineConnection,
        values: Mapping[str, Any],
        detail: dict[str, Any],
    ) -> bool:
        """Insert a run in ``driver``'s open transaction (a caller's, ``start(session=…)``)."""
        return await driver.run(
            lambda: self.statements.write_insert(driver.sqlite, values, detail), read=False
        )

    async def _submit(self, write: Write, what: str) -> object:
        # The group waits for the writer lock this task holds: it would wait for itself.
        self._db.refuse_nested()
        try:
            return await self._batch.submit(write)
        except Exception as error:
            busy = self._db.busy_error(error)
            if busy is not None:
                raise busy from error
            if isinstance(error, OSError) or is_database_unavailable(error):
                raise unavailable(error, what) from error
            raise

    @asynccontextmanager
    async def _gate(self) -> AsyncIterator[None]:
        # Statements run inline, so no other task runs while a write holds the lock: first
        # let the tasks that are ready queue their writes, to go out in this transaction.
        await asyncio.sleep(0)
        async with self._db.writer():
            yield
            # The writers this group answered resume (and apply their progress) before the
            # lock passes on: a lease renewal or claim must not see their runs move first, as
            # it never could when each runner committed its own write.
            await asyncio.sleep(0)

    async def _connection(self) -> sqlite_inline.InlineConnection:
        if self._conn is None:
            conn = await sqlite_inline.connect(self._file, busy_timeout=self._patience)
            for pragma in sqlite_pragmas():
                await conn.run(partial(conn.sqlite.execute, pragma), read=False)
            self._conn = conn
        return self._conn

    async def _flush(self, items: Sequence[Write]) -> list[object]:
        """One write transaction for ``items`` (the Batcher holds the writer lock meanwhile)."""
        conn = await self._connection()
        sq = conn.sqlite
        await conn.run(lambda: sq.execute("BEGIN IMMEDIATE"), read=False)
        try:
            until = self._clock.now() + self._lease
            results = await conn.run(lambda: [write(sq, until) for write in items], read=False)
            await conn.commit()
        except BaseException:
            if sq.in_transaction:
                sq.rollback()
            raise
        self.transactions += 1
        return results

    async def close(self) -> None:
        """Finish queued writes and close the connection."""
        await self._batch.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
