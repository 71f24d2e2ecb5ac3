"""How the in-memory store meets SQL transactions: transactional steps and ``start(session=)``.

A memory store may be given a business :class:`~cloudphone.saga.store.database.Database`.
A transactional step then writes through a real transaction of it (``ctx.session``), and the
step's progress is applied in memory, under the store's lock, right after that transaction
committed: the business write and the progress happen together or, when the epoch is stale,
not at all (the transaction is rolled back before it commits). Without a database a
transactional step cannot run: its ``ctx.session`` raises a clear error.

A run inserted with ``session=`` (any SQLAlchemy connection in a transaction) stays invisible
until that transaction commits and disappears if it rolls back, as in SQL.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.context import QueuedWrite
from cloudphone.saga.errors import NonRetryableError, QueuedWriteError
from cloudphone.saga.ports import Committed
from cloudphone.saga.progress import Progress
from cloudphone.saga.store.writes import run_writes

if TYPE_CHECKING:
    from cloudphone.saga.store.memory import MemoryStore

Outcome = Callable[[], None]

_waiting: weakref.WeakKeyDictionary[Connection, list[tuple[Outcome, Outcome]]] = (
    weakref.WeakKeyDictionary()
)
"""Per connection: what to do when its open transaction commits, or rolls back."""

_hooked: weakref.WeakSet[Connection] = weakref.WeakSet()
"""Connections whose commit and rollback events are listened to."""


async def on_outcome(session: AsyncConnection, committed: Outcome, rolled_back: Outcome) -> None:
    """Call ``committed`` when ``session``'s transaction commits, else ``rolled_back``.

    A connection not in a transaction begins one, as its first statement would in SQL.
    SQLAlchemy announces a commit just before it reaches the database: a commit that then
    fails still counts as committed here (rare, and the run would only be retried for
    nothing).
    """
    if not session.in_transaction():
        await session.begin()
    conn = session.sync_connection
    assert conn is not None  # a connection in a transaction has one
    if conn not in _hooked:
        _hooked.add(conn)
        event.listen(conn, "commit", _settle(committed=True))
        event.listen(conn, "rollback", _settle(committed=False))
    _waiting.setdefault(conn, []).append((committed, rolled_back))


def _settle(*, committed: bool) -> Callable[[Connection], None]:
    def settle(conn: Connection) -> None:
        for on_commit, on_rollback in _waiting.pop(conn, []):
            (on_commit if committed else on_rollback)()

    return settle


class MemoryStepTx:
    """A transactional step's business transaction; its commit applies the progress too."""

    def __init__(self, store: MemoryStore, conn: AsyncConnection) -> None:
        self._store = store
        self._conn = conn

    @property
    def session(self) -> AsyncConnection:
        """The business connection the step writes through."""
        return self._conn

    async def commit(
        self,
        run_id: str,
        epoch: int,
        progress: Progress,
        seq: int | None = None,
        writes: Sequence[QueuedWrite] = (),
    ) -> Committed:
        """Run the queued writes and commit the business transaction, then the progress.

        Fenced first: a stale epoch or seq rolls the transaction back, writes included.
        """
        await run_writes(self._conn, writes)
        async with self._store.lock:
            self._store.check_held(run_id, epoch, seq)
            await self._conn.commit()
            return self._store.apply(run_id, epoch, progress)


class DetachedStepTx:
    """A transactional step on a store without a database: no session to give."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    @property
    def session(self) -> AsyncConnection:
        """Refuses: there is no database."""
        raise _no_database()

    async def commit(
        self,
        run_id: str,
        epoch: int,
        progress: Progress,
        seq: int | None = None,
        writes: Sequence[QueuedWrite] = (),
    ) -> Committed:
        """Record the progress alone; refuses queued writes (there is no database)."""
        if writes:
            raise QueuedWriteError(_no_database())
        return await self._store.commit(run_id, epoch, progress, seq)


def _no_database() -> NonRetryableError:
    return NonRetryableError(
        "this transactional step needs a database for ctx.session and ctx.write, and the "
        "in-memory store has none: pass database= (e.g. a SQLite file with the service's "
        "tables) to MemoryEngine"
    )
