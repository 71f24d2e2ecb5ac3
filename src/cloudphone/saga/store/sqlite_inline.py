"""SQLite for SQLAlchemy's asyncio engine, run inline on the event loop.

aiosqlite runs every call on a helper thread; on this project's small VMs each hop costs a
context switch, so the engine spent 2.2 times the CPU per saga and ran 2-3 times fewer sagas
per second on it than inline (``bench/README.md``, "SQLite: inline or aiosqlite"). This module
gives SQLAlchemy's aiosqlite dialect, through its public ``async_creator`` hook, a connection
with aiosqlite's shape whose coroutines run ``sqlite3`` directly.

Two things could still hold the event loop, and neither does:

- **Another process holds the write lock** (a CLI command, a second worker): SQLite answers
  ``SQLITE_BUSY`` or ``SQLITE_LOCKED`` (told by error code, never by message) at once, since
  its own busy handler is off, and the call is tried again after an ``asyncio.sleep`` until
  the busy timeout has passed; then the error is raised, and the engine treats it as the
  database being unavailable (it backs off and tries again). Retrying is safe: a busy
  statement changed nothing (checked: ``total_changes``), and a busy ``COMMIT`` leaves its
  transaction open to be committed again.
- **A long read** (a console count over a big table, a scan): a read statement that has run
  for ``INLINE_BUDGET`` on the loop is interrupted by SQLite's progress handler and runs again,
  from the start, on a thread, while the loop goes on; an interrupted read changes nothing
  and leaves its transaction as it was. Writes are never interrupted (that would roll their
  transaction back): they stay inline, and are short (the engine's are single statements).

SQLAlchemy's adapter reaches into aiosqlite's connection (``_connection``, ``_conn``, ``_tx``),
so this shape is tested against the SQLAlchemy versions pinned in ``pyproject.toml``
(``tests/integration/saga/test_sqlite_driver.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from functools import lru_cache
from typing import Any, TypeVar

BUSY_TIMEOUT = 30.0
"""Default seconds to keep retrying while another process holds SQLite's write lock."""

INLINE_BUDGET = 0.010
"""Seconds a read may hold the event loop before it moves to a thread."""

_PROGRESS_STEP = 1000
"""SQLite virtual-machine steps between two looks at the clock (tens of microseconds)."""

_RETRYABLE = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

T = TypeVar("T")


def sqlite_busy(error: BaseException) -> bool:
    """Whether a sqlite3 error says another connection holds a lock it needs.

    Decided by the primary error code (``SQLITE_BUSY``, ``SQLITE_LOCKED`` and their extended
    codes), except ``SQLITE_BUSY_SNAPSHOT``: that transaction read a snapshot older than the
    last write and must start again, so retrying its statement cannot succeed.
    """
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(code, int) or code == sqlite3.SQLITE_BUSY_SNAPSHOT:
        return False
    return code & 0xFF in _RETRYABLE


_TOKENS = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/|[()]|[A-Za-z_]\w*",
    re.DOTALL,
)


@lru_cache(maxsize=1024)
def is_read(sql: str) -> bool:
    """Whether a statement only reads: ``SELECT``, ``VALUES``, ``EXPLAIN``, or ``WITH … SELECT``.

    A ``WITH`` clause may also lead an INSERT, UPDATE or DELETE: the first of those keywords
    outside parentheses, quotes and comments decides.
    """
    depth = 0
    first = True
    for match in _TOKENS.finditer(sql):
        token = match.group()
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0 and (token[0].isalpha() or token[0] == "_"):
            word = token.upper()
            if first and word != "WITH":
                return word in ("SELECT", "VALUES", "EXPLAIN")
            first = False
            if word in ("SELECT", "VALUES"):
                return True
            if word in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
                return False
    return False


class _Overran(Exception):
    """A read ran past the inline budget and was interrupted (nothing changed)."""


class InlineCursor:
    """aiosqlite.Cursor's interface over a sqlite3 cursor; a statement's rows are read at once."""

    def __init__(self, owner: InlineConnection, cursor: sqlite3.Cursor) -> None:
        self._owner = owner
        self._cursor = cursor
        self._rows: deque[Any] = deque()

    def __await__(self) -> Generator[Any, None, InlineCursor]:
        # aiosqlite's cursor() gives an awaitable that is also a context manager: SQLAlchemy
        # 2.0 awaits it, 2.1 enters it.
        return self._itself().__await__()

    async def _itself(self) -> InlineCursor:
        return self

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while self._rows:
            yield self._rows.popleft()

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

    async def execute(self, sql: str, parameters: Sequence[Any] | Any = ()) -> InlineCursor:
        """Run one statement and read its rows (a long read runs on a thread)."""
        cursor = self._cursor

        def run() -> deque[Any]:
            cursor.execute(sql, parameters)
            return deque(cursor.fetchall()) if cursor.description is not None else deque()

        self._rows = await self._owner.run(run, read=is_read(sql))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        """Run one statement for each parameter set."""
        rows = list(parameters)
        await self._owner.run(lambda: self._cursor.executemany(sql, rows), read=False)
        self._rows = deque()
        return self

    async def fetchone(self) -> Any:
        """Next row, or None."""
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` rows (``arraysize`` by default)."""
        count = min(self._cursor.arraysize if size is None else size, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> list[Any]:
        """Remaining rows."""
        rows = list(self._rows)
        self._rows.clear()
        return rows

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
    """aiosqlite.Connection's interface over a sqlite3 connection, without a helper thread.

    Args:
        connector: Opens the sqlite3 connection (its own busy timeout off, usable from a
            thread for long reads).
        patience: Seconds to retry while another process holds a lock.
        budget: Seconds a read may run on the event loop before it moves to a thread.
    """

    def __init__(
        self, connector: Callable[[], sqlite3.Connection], patience: float, budget: float
    ) -> None:
        self._connector = connector
        self._patience = patience
        self._budget = budget
        self._until: float | None = None
        self._overran = False
        self._conn: sqlite3.Connection | None = None
        self._connection: sqlite3.Connection | None = None  # SQLAlchemy tests it for "open"
        self._threaded: asyncio.Future[Any] | None = None
        self._tx = _InlineQueue()

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._open().__await__()

    async def _open(self) -> InlineConnection:
        conn = self._connector()
        conn.set_progress_handler(self._progress, _PROGRESS_STEP)
        self._conn = self._connection = conn
        return self

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("no active connection")
        return self._conn

    def _progress(self) -> int:
        """SQLite's progress handler: non-zero interrupts the statement (a read past budget)."""
        if self._until is None or time.perf_counter() < self._until:
            return 0
        self._overran = True
        return 1

    async def run(self, call: Callable[[], T], *, read: bool) -> T:
        """Run a sqlite3 call: inline, a read past the budget again on a thread; retried while busy.

        Args:
            call: The sqlite3 work (a statement and the reading of its rows).
            read: The statement only reads, so it may be interrupted and run again.
        """
        conn = self._live()
        offload = False
        delay = 0.001
        deadline: float | None = None
        while True:
            changes = conn.total_changes
            try:
                return await self._in_thread(conn, call) if offload else self._inline(call, read)
            except _Overran:
                offload = True
                continue
            except sqlite3.OperationalError as error:
                if not sqlite_busy(error) or conn.total_changes != changes:
                    raise
                now = time.monotonic()
                deadline = now + self._patience if deadline is None else deadline
                if now >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _inline(self, call: Callable[[], T], read: bool) -> T:
        if not read:
            return call()
        conn = self._live()
        was_open = conn.in_transaction
        self._overran = False
        self._until = time.perf_counter() + self._budget
        try:
            return call()
        except sqlite3.OperationalError as error:
            # Run again only what the budget cut short and nothing undid (a statement taken
            # for a read that wrote would have rolled its transaction back: raise then).
            interrupted = error.sqlite_errorcode == sqlite3.SQLITE_INTERRUPT
            if self._overran and interrupted and conn.in_transaction == was_open:
                raise _Overran from None
            raise
        finally:
            self._until = None

    async def _in_thread(self, conn: sqlite3.Connection, call: Callable[[], T]) -> T:
        conn.set_progress_handler(None, 0)
        future = self._threaded = asyncio.get_running_loop().run_in_executor(None, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The caller gave up (a step timeout, say): stop the statement and wait for the
            # thread to let go of the connection before anyone else uses it.
            conn.interrupt()
            await _settled(future)
            raise
        finally:
            if future.done() and self._conn is conn:  # not closed meanwhile
                conn.set_progress_handler(self._progress, _PROGRESS_STEP)

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The sqlite3 connection itself: for calls given to :meth:`run`."""
        return self._live()

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
        return InlineCursor(self, self._live().cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        """Run one statement on a new cursor."""
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        """Commit (retried while another process holds the lock)."""
        await self.run(self._live().commit, read=False)

    async def rollback(self) -> None:
        """Roll back."""
        self._live().rollback()

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        self.stop()

    def stop(self) -> None:
        """Close at once (SQLAlchemy's terminate)."""
        conn, self._conn, self._connection = self._conn, None, None
        if conn is None:
            return
        threaded = self._threaded
        if threaded is not None and not threaded.done():
            # Closing under a running statement would crash sqlite3: stop it, close after.
            conn.interrupt()
            threaded.add_done_callback(lambda _: conn.close())
            return
        conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        """Register a SQL function."""
        self._live().create_function(*args, **kwargs)


async def _settled(future: asyncio.Future[Any]) -> None:
    """Wait until a thread's call has ended, whatever happens to the waiting task meanwhile."""
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([future])
    if not future.cancelled():
        future.exception()  # retrieved: the interrupted statement's error is expected


def connect(
    database: str, *, busy_timeout: float = BUSY_TIMEOUT, inline_budget: float = INLINE_BUDGET
) -> InlineConnection:
    """An awaitable aiosqlite-shaped connection, for ``create_async_engine(async_creator=…)``.

    Args:
        database: Path of the database file.
        busy_timeout: Seconds to retry while another process holds the write lock.
        inline_budget: Seconds a read may run on the event loop before it moves to a thread.
    """

    def open_file() -> sqlite3.Connection:
        # timeout=0: SQLite's busy handler would sleep on the event loop; we retry instead.
        # isolation_level=None: BEGIN is ours to send (see database.py).
        return sqlite3.connect(database, timeout=0, isolation_level=None, check_same_thread=False)

    return InlineConnection(open_file, busy_timeout, inline_budget)
