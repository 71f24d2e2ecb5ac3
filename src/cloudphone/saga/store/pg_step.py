"""Statements a step sends on its own connection (asyncpg): in its transaction, or alone.

Mixed into :class:`~cloudphone.saga.store.pg.PgFastPath`. A transactional step's progress (or
a group of steps', see :mod:`.step_group`) is one statement straight to the driver on the
step's connection, in its transaction; a step that sent nothing has no transaction open, so
its progress joins the fast path's next group commit instead. A lone step's one queued write
with its progress (:mod:`.pg_write`), or a new run's insert with its first step
(:mod:`.first_insert`), is one atomic statement sent outside a transaction. On another
driver the progress goes through SQLAlchemy in the step's transaction, and what must be one
statement goes the ordinary way (:class:`~.pg_write.NotCombined`).

SQLAlchemy does not see the driver's errors, so connection trouble here invalidates the
step's connection and leaves as DatabaseUnavailableError. The helpers below the class serve
the group commit too: the progress statement for one run or many, and its rows in order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.context import QueuedWrite
from cloudphone.saga.ports import Clock
from cloudphone.saga.progress import Progress
from cloudphone.saga.store import first_insert
from cloudphone.saga.store.base import NewRun
from cloudphone.saga.store.disconnects import driver_error_unavailable, unavailable
from cloudphone.saga.store.pg_sql import (
    COMMIT_MANY_SQL,
    COMMIT_ONE_SQL,
    COMMIT_SQL,
    Written,
    progress_args,
    progress_columns,
    progress_item,
)
from cloudphone.saga.store.pg_write import NotCombined, combined, is_fenced, raw_connection

_Commit = tuple[str, int, Progress, "int | None"]
"""A queued progress write: run id, epoch, progress, the ``last_seq`` it is fenced by."""


class StepStatements:
    """Progress and writes sent on a step's connection, mixed into ``PgFastPath``.

    The attributes are the fast path's; it sets them.
    """

    _lease: timedelta
    _clock: Clock

    if TYPE_CHECKING:

        async def commit(
            self, run_id: str, epoch: int, progress: Progress, seq: int | None = None
        ) -> Written | None:
            """Commit progress with the next group (the fast path's)."""

    async def commit_in(
        self,
        conn: AsyncConnection,
        run_id: str,
        epoch: int,
        progress: Progress,
        seq: int | None = None,
    ) -> Written | None:
        """Commit progress inside the caller's transaction (a transactional step)."""
        driver = (await raw_connection(conn)).driver_connection
        if isinstance(driver, asyncpg.Connection):
            (written,), _shared = await self.commit_group_in(conn, [(run_id, epoch, progress, seq)])
            return written
        until = self._clock.now() + self._lease
        payload = json.dumps([progress_item(run_id, epoch, progress, until, seq)])
        result = await conn.execute(
            text(COMMIT_SQL.replace("$1", ":batch").replace("$2", ":ids")),
            {"batch": payload, "ids": [run_id]},
        )
        rows = [dict(r._mapping) for r in result]
        return _written(rows[0]) if rows else None

    async def commit_group_in(
        self, conn: AsyncConnection, items: Sequence[_Commit]
    ) -> tuple[list[Written | None], bool]:
        """Commit runs' progress in the caller's transaction (a step, or a group of steps).

        One statement for all of them, straight to the driver on the caller's connection: the
        same transaction. Steps that sent nothing have no transaction open: their records are
        atomic statements of their own either way, so they join the next group commit, each
        committed (or fenced) alone.

        Returns:
            Each item's write (None: fenced off), and whether they share the transaction.
        """
        driver = (await raw_connection(conn)).driver_connection
        assert isinstance(driver, asyncpg.Connection)
        if not driver.is_in_transaction():
            alone = await asyncio.gather(*(self.commit(r, e, p, seq) for r, e, p, seq in items))
            return list(alone), False
        statement = _progress_statement(items, self._clock.now() + self._lease)
        rows = await _fetch_in(conn, driver, "progress write", *statement)
        return _in_order(rows, items), True

    async def commit_writing(
        self,
        conn: AsyncConnection,
        write: QueuedWrite,
        run_id: str,
        epoch: int,
        progress: Progress,
        seq: int | None,
    ) -> Written | None:
        """Send a lone step's one queued write and its progress as one statement.

        Only when ``conn`` is asyncpg's and has sent nothing (no transaction open) and the
        write can be a CTE (see :mod:`.pg_write`). The statement is atomic: fenced off (None)
        it wrote nothing, a lost connection leaves both landed or neither
        (DatabaseUnavailableError).

        Raises:
            NotCombined: Nothing was written and the write must go the ordinary way: it
                cannot be a CTE, or it failed (run the ordinary way it raises its error as
                SQLAlchemy reports it, or succeeds if what made it fail is gone).
        """
        one = combined(write, conn)
        if one is None:
            raise NotCombined()
        sql, args = one
        until = self._clock.now() + self._lease
        row = await self.send_alone(
            conn, sql, *args, *progress_args(run_id, epoch, progress, until, seq)
        )
        if row is None:
            return None
        assert row["id"] is not None, "the fence let a refused progress through"
        return _written(row)

    async def commit_inserting(
        self, conn: AsyncConnection, new: NewRun, progress: Progress, write: QueuedWrite | None
    ) -> Written:
        """Insert a run claimed by its insert already past its first step (and its write).

        One statement (see :mod:`.first_insert`). With ``write``: under the same conditions
        and with the same errors as :meth:`commit_writing`. Without: sent in ``conn``'s
        transaction if one is open (after the step's own statements), else alone. Never
        fenced (the run is new).

        Raises:
            NotCombined: Nothing was written: ``conn`` is not asyncpg's, or (with ``write``)
                see :meth:`commit_writing`.
        """
        until = self._clock.now() + self._lease
        run_args = first_insert.insert_past_first_args(new, progress, self._lease, until)
        if write is None:
            driver = (await raw_connection(conn)).driver_connection
            if not isinstance(driver, asyncpg.Connection):
                raise NotCombined()
            sql = first_insert.INSERT_PAST_FIRST_ALONE
            (row,) = await _fetch_in(conn, driver, "start with its first step", sql, *run_args)
            return _written(row)
        one = combined(write, conn, first_insert.INSERT_PAST_FIRST_SQL)
        if one is None:
            raise NotCombined()
        sql, args = one
        found = await self.send_alone(conn, sql, *args, *run_args)
        assert found is not None, "an insert returned no row"
        return _written(found)

    async def send_alone(
        self, conn: AsyncConnection, sql: str, *args: Any
    ) -> asyncpg.Record | None:
        """Send one atomic statement on ``conn``'s driver connection, outside a transaction.

        Returns its one row, or None if it failed on its fence (:data:`.pg_write.FENCED`).

        Raises:
            NotCombined: ``conn`` is not asyncpg's or has a transaction open, or the server
                refused the statement for a reason of its own (nothing was written).
            DatabaseUnavailableError: The connection failed (``conn`` is invalidated).
        """
        driver = (await raw_connection(conn)).driver_connection
        if not isinstance(driver, asyncpg.Connection) or driver.is_in_transaction():
            raise NotCombined()
        try:
            rows = await driver.fetch(sql, *args)
        except Exception as error:
            if is_fenced(error):
                return None
            if isinstance(error, OSError) or driver_error_unavailable(error):
                await conn.invalidate(error)
            _unavailable(error, "step write")
            # The server refused it, or asyncpg could not encode a value: nothing was
            # written, and the connection is fine (else the ordinary way finds out).
            raise NotCombined() from error
        (row,) = rows
        return row


async def _fetch_in(
    conn: AsyncConnection, driver: asyncpg.Connection, what: str, sql: str, *args: Any
) -> list[asyncpg.Record]:
    """Run ``sql`` on ``conn``'s driver connection, in its transaction if one is open.

    SQLAlchemy does not see the driver's errors, so its pool is told here when the
    connection is dead; connection trouble leaves as DatabaseUnavailableError.
    """
    try:
        return list(await driver.fetch(sql, *args))
    except Exception as error:
        if not isinstance(error, asyncpg.PostgresError) or driver_error_unavailable(error):
            await conn.invalidate(error)
        _unavailable(error, what)
        raise


def _progress_statement(items: Sequence[_Commit], until: datetime) -> tuple[Any, ...]:
    """The statement recording ``items`` and its parameters (typed, one run or many)."""
    if len(items) == 1:
        run_id, epoch, progress, seq = items[0]
        return (COMMIT_ONE_SQL, *progress_args(run_id, epoch, progress, until, seq))
    return (COMMIT_MANY_SQL, *progress_columns(items, until))


def _in_order(rows: Sequence[asyncpg.Record], items: Sequence[_Commit]) -> list[Written | None]:
    """Each item's write, from the rows the statement returned (None: fenced off)."""
    held = {(r["id"], r["epoch"]): _written(r) for r in rows}
    return [held.get((run_id, epoch)) for run_id, epoch, *_rest in items]


def _unavailable(error: BaseException, what: str) -> None:
    """Raise DatabaseUnavailableError from ``error`` if it is connection trouble.

    In the fast path's own calls every OSError is (a refused or reset connection, a connect
    that timed out), as is an interrupted group commit.
    """
    if isinstance(error, OSError) or driver_error_unavailable(error):
        raise unavailable(error, what) from error


def _written(row: Mapping[str, Any]) -> Written:
    return bool(row["cancel_requested"]), int(row["last_seq"])
