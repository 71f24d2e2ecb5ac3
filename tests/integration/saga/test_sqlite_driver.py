"""The inline SQLite driver (``store/sqlite_inline.py``) on its own and under SQLAlchemy.

Cursor, executemany, commit and rollback, errors; busy answers while another process holds the
write lock (waited for without blocking the loop, told apart by error code); long reads that
move to a thread so the loop's timers fire on time.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from cloudphone.saga import Database, DatabaseUnavailableError, is_database_unavailable
from cloudphone.saga.store import sqlite_inline
from cloudphone.saga.store.sqlite_inline import InlineConnection, is_read, sqlite_busy
from tests.support.sqlite_lock import write_lock_held
from tests.support.waiting import eventually

LONG_READ = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
    "SELECT count(*) FROM c"
)
"""About a second for 3,000,000 rows on the test VM: far longer than the inline budget."""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    file = tmp_path / "driver.db"
    with sqlite3.connect(file, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    return file


@pytest.fixture
async def conn(path: Path) -> AsyncIterator[InlineConnection]:
    opened = await sqlite_inline.connect(str(path))
    yield opened
    await opened.close()


def count_rows(path: Path) -> int:
    """Committed rows of ``t``, seen by another connection."""
    with sqlite3.connect(path) as other:
        return int(other.execute("SELECT count(*) FROM t").fetchone()[0])


class Ticker:
    """Counts event-loop turns: it ticks only while nothing holds the loop."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self.ticks += 1

    def stop(self) -> None:
        self._task.cancel()


async def test_cursor_reads_rows_every_way(conn: InlineConnection) -> None:
    """executemany, then fetchone, fetchmany, fetchall and async iteration over one result."""
    cursor = conn.cursor()
    await cursor.executemany(
        "INSERT INTO t (id, name) VALUES (?, ?)", [(i, f"n{i}") for i in range(6)]
    )
    assert cursor.rowcount == 6
    await cursor.execute("INSERT INTO t (name) VALUES (?)", ("last",))
    assert cursor.lastrowid == 6
    await cursor.execute("SELECT id, name FROM t ORDER BY id")
    assert [column[0] for column in cursor.description] == ["id", "name"]
    assert await cursor.fetchone() == (0, "n0")
    assert await cursor.fetchmany(2) == [(1, "n1"), (2, "n2")]
    cursor.arraysize = 1
    assert await cursor.fetchmany() == [(3, "n3")]
    assert [row async for row in cursor] == [(4, "n4"), (5, "n5"), (6, "last")]
    assert await cursor.fetchall() == []
    assert await cursor.fetchone() is None
    await cursor.close()


async def test_commit_and_rollback(conn: InlineConnection, path: Path) -> None:
    """Rolled-back rows are gone, committed ones are visible to other connections."""
    assert conn.isolation_level is None  # BEGIN is the caller's to send
    await conn.execute("BEGIN IMMEDIATE")
    await conn.execute("INSERT INTO t (id) VALUES (1)")
    assert conn.in_transaction
    await conn.rollback()
    assert not conn.in_transaction
    assert count_rows(path) == 0
    await conn.execute("BEGIN IMMEDIATE")
    await conn.execute("INSERT INTO t (id) VALUES (2)")
    await conn.commit()
    assert count_rows(path) == 1


async def test_errors_are_sqlite3s_and_raised_at_once(conn: InlineConnection) -> None:
    """A constraint violation or bad SQL is raised as it is, not retried as if busy."""
    await conn.execute("INSERT INTO t (id) VALUES (1)")
    async with asyncio.timeout(5):
        with pytest.raises(sqlite3.IntegrityError):
            await conn.execute("INSERT INTO t (id) VALUES (1)")
        with pytest.raises(sqlite3.OperationalError, match="syntax error") as bad:
            await conn.execute("SELEC nothing")
    assert not sqlite_busy(bad.value)
    await conn.close()
    with pytest.raises(ValueError, match="no active connection"):
        conn.cursor()


async def test_busy_lock_is_waited_for_without_blocking_the_loop(
    conn: InlineConnection, path: Path
) -> None:
    """While another process holds the write lock, BEGIN IMMEDIATE waits and the loop runs."""
    ticker = Ticker()
    async with write_lock_held(path) as holder:
        begin = asyncio.create_task(conn.execute("BEGIN IMMEDIATE"))
        await eventually(lambda: asyncio.sleep(0, ticker.ticks), lambda t: t >= 10)
        assert not begin.done()  # still waiting for the lock, and the loop turned meanwhile
        await holder.release()
        await asyncio.wait_for(begin, 10)
    ticker.stop()
    await conn.execute("INSERT INTO t (id) VALUES (1)")
    await conn.commit()
    assert count_rows(path) == 1


async def test_busy_is_told_by_error_code_and_a_stale_snapshot_is_not_retried(
    conn: InlineConnection, path: Path
) -> None:
    """SQLITE_BUSY_SNAPSHOT says "database is locked" too, but waiting cannot cure it."""
    await conn.execute("BEGIN")
    await conn.execute("SELECT * FROM t")
    with sqlite3.connect(path, isolation_level=None) as other:
        other.execute("INSERT INTO t (id) VALUES (1)")
    async with asyncio.timeout(5):  # patience is 30 s: a retry would run into this deadline
        with pytest.raises(sqlite3.OperationalError, match="database is locked") as stale:
            await conn.execute("INSERT INTO t (id) VALUES (2)")
    assert stale.value.sqlite_errorcode == sqlite3.SQLITE_BUSY_SNAPSHOT
    assert not sqlite_busy(stale.value)
    await conn.rollback()


async def test_busy_past_the_timeout_counts_as_the_database_unavailable(path: Path) -> None:
    """After the busy timeout the error is raised, and the engine treats it as an outage."""
    db = Database(f"sqlite+aiosqlite:///{path}", busy_timeout_ms=100)
    try:
        async with write_lock_held(path):
            with pytest.raises(DatabaseUnavailableError, match="held the write lock") as busy:
                async with db.begin() as conn:
                    await conn.execute(sa.text("INSERT INTO t (id) VALUES (1)"))
        cause = busy.value.__cause__
        assert isinstance(cause, sa_exc.OperationalError)
        assert cause.orig.sqlite_errorcode == sqlite3.SQLITE_BUSY  # type: ignore[union-attr]
        assert sqlite_busy(cause.orig)
        # The same answer outside Database.begin() (a read, another layer) is classified alike.
        assert is_database_unavailable(cause)
        assert not is_database_unavailable(sqlite3.OperationalError("database is locked"))
    finally:
        await db.dispose()


@pytest.mark.parametrize(
    ("sql", "read"),
    [
        ("SELECT 1", True),
        ("  select * from t", True),
        ("VALUES (1)", True),
        ("EXPLAIN QUERY PLAN SELECT 1", True),
        ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c", True),
        ("WITH a AS (SELECT 1), b AS MATERIALIZED (SELECT 2) SELECT * FROM a, b", True),
        ("WITH a AS (SELECT id FROM t) DELETE FROM t WHERE id IN (SELECT id FROM a)", False),
        ("WITH a AS (SELECT 'SELECT') INSERT INTO t (name) SELECT * FROM a", False),
        ("with \"select\" as (select 1) update t set name = 'x'", False),
        ("WITH a AS (SELECT 1) -- SELECT\n REPLACE INTO t (id) SELECT * FROM a", False),
        ("/* SELECT */ UPDATE t SET name = 'x'", False),
        ("INSERT INTO t (id) SELECT 1", False),
        ("UPDATE t SET name = 'x' RETURNING id", False),
        ("PRAGMA journal_mode=WAL", False),
        ("BEGIN IMMEDIATE", False),
    ],
)
def test_only_reads_may_move_to_a_thread(sql: str, read: bool) -> None:
    """A write interrupted by the budget would roll its transaction back: only reads move."""
    assert is_read(sql) is read


async def fires_during(db: Database, conn: sa.ext.asyncio.AsyncConnection) -> tuple[bool, int]:
    """Run a long read on ``conn``; whether a timer due 20 ms in fired before it returned."""
    loop = asyncio.get_running_loop()
    read_done = False
    fired_during: list[bool] = []
    loop.call_later(0.02, lambda: fired_during.append(not read_done))
    total = await conn.scalar(sa.text(LONG_READ.replace("?", ":n")), {"n": 3_000_000})
    read_done = True
    await eventually(lambda: asyncio.sleep(0, fired_during), bool)
    return fired_during[0], int(total)


async def test_a_long_read_leaves_the_loop_free(path: Path) -> None:
    """A timer due while a long read runs fires before the read is done (it ran on a thread)."""
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.read() as conn:
            fired, total = await fires_during(db, conn)
    finally:
        await db.dispose()
    assert total == 3_000_000
    assert fired


async def test_a_long_read_inside_a_write_transaction_keeps_the_transaction(path: Path) -> None:
    """The read moves to a thread mid-transaction; the transaction's writes stay and commit."""
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.begin() as conn:
            await conn.execute(sa.text("INSERT INTO t (id, name) VALUES (1, 'kept')"))
            fired, total = await fires_during(db, conn)
            assert await conn.scalar(sa.text("SELECT name FROM t WHERE id = 1")) == "kept"
            await conn.execute(sa.text("INSERT INTO t (id, name) VALUES (2, 'after')"))
    finally:
        await db.dispose()
    assert fired
    assert total == 3_000_000
    assert count_rows(path) == 2


async def test_cancelling_a_long_read_stops_it_and_frees_the_connection(
    conn: InlineConnection,
) -> None:
    """A caller giving up (a step timeout) interrupts the statement on its thread."""
    ticker = Ticker()
    read = asyncio.create_task(conn.execute(LONG_READ, (100_000_000,)))  # a minute or more
    # The loop turns while the read runs: it left the loop for a thread.
    await eventually(lambda: asyncio.sleep(0, ticker.ticks), lambda t: t >= 10)
    assert not read.done()
    read.cancel()
    await asyncio.wait([read], timeout=10)  # the thread would count for a minute more
    assert read.cancelled()
    ticker.stop()
    assert not conn.in_transaction
    cursor = await conn.execute("SELECT 42")
    assert await cursor.fetchall() == [(42,)]


async def test_closing_under_a_long_read_stops_the_read_first(conn: InlineConnection) -> None:
    """SQLAlchemy's terminate may close a connection whose read runs on a thread: no crash."""
    ticker = Ticker()
    read = asyncio.create_task(conn.execute(LONG_READ, (100_000_000,)))
    await eventually(lambda: asyncio.sleep(0, ticker.ticks), lambda t: t >= 10)
    ticker.stop()
    conn.stop()  # closing the sqlite3 connection under the running statement would crash
    await asyncio.wait([read], timeout=10)
    assert isinstance(read.exception(), sqlite3.OperationalError)  # interrupted
    with pytest.raises(ValueError, match="no active connection"):
        conn.cursor()


async def test_sqlalchemy_features_work_through_the_driver(path: Path) -> None:
    """Streaming results, SQLAlchemy's functions (regexp) and invalidation (terminate)."""
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.begin() as conn:
            await conn.execute(
                sa.text("INSERT INTO t (id, name) VALUES (:id, :name)"),
                [{"id": i, "name": f"n{i}"} for i in range(5)],
            )
        t = sa.table("t", sa.column("id"), sa.column("name"))
        async with db.read() as conn:
            streamed = await conn.stream(sa.select(t.c.id).order_by(t.c.id))
            assert [row.id async for row in streamed] == [0, 1, 2, 3, 4]
            matched = await conn.scalars(sa.select(t.c.id).where(t.c.name.regexp_match("^n[13]$")))
            assert list(matched) == [1, 3]
        async with db.engine.connect() as conn:
            await conn.invalidate()  # closes the driver connection at once (stop())
        async with db.read() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == 5
    finally:
        await db.dispose()
