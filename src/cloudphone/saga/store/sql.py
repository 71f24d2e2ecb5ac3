"""The engine's store: progress writes, claims, leases and reads, in SQL.

Written once with SQLAlchemy Core for both databases. On PostgreSQL the hot writes (start,
progress, claim) are single statements that chain their UPDATE and event INSERT in CTEs, sent
on a dedicated asyncpg pool, grouped across runs (see :mod:`.pg`).

Progress writes are fenced by epoch and ``last_seq``; one that matches no row is explained by
the stored run (see :mod:`.reconcile`), which also makes repeating a write after a lost answer
safe. Connection trouble leaves every method as DatabaseUnavailableError.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.context import QueuedWrite
from cloudphone.saga.errors import SagaNotFoundError
from cloudphone.saga.ports import Clock, Committed, StepTransaction
from cloudphone.saga.progress import NewEvent, Progress
from cloudphone.saga.records import EventKind
from cloudphone.saga.store import first_insert, lite, pg_sql, reconcile
from cloudphone.saga.store.base import FirstStepInserts, NewRun
from cloudphone.saga.store.database import Database
from cloudphone.saga.store.disconnects import raise_unavailable
from cloudphone.saga.store.leases import RunLeases
from cloudphone.saga.store.listen import Listener
from cloudphone.saga.store.lite_fast import LiteFastPath, inline_of
from cloudphone.saga.store.pg_write import NotCombined
from cloudphone.saga.store.queries import RunQueries
from cloudphone.saga.store.rows import event_rows, new_run_values, start_detail
from cloudphone.saga.store.step_group import StepGroups
from cloudphone.saga.store.step_tx import StepTx
from cloudphone.saga.store.tables import metadata, saga_events, saga_runs
from cloudphone.saga.store.workers import PresenceQueries
from cloudphone.saga.store.writes import run_writes

if TYPE_CHECKING:
    from cloudphone.saga.store.pg import PgFastPath

STEP_GROUP = 32
"""Most transactional steps that share one PostgreSQL transaction by default."""


class SqlStore(RunLeases, RunQueries, PresenceQueries):
    """Reads and writes of ``saga_runs`` and ``saga_events``: the SQL :class:`.base.SagaStore`.

    Args:
        db: The database.
        lease: How long a claim or progress write keeps a run leased.
        clock: Time source.
        step_group: On PostgreSQL (asyncpg), most transactional steps of different runs that
            share one transaction (see :mod:`.step_group`); 1 gives every step its own.
    """

    def __init__(
        self, db: Database, lease: timedelta, clock: Clock, step_group: int = STEP_GROUP
    ) -> None:
        if step_group < 1:
            raise ValueError(f"step_group must be 1 (every step alone) or more, not {step_group}")
        self.db = db
        self.lease = lease
        self.clock = clock
        self._fast: PgFastPath | None = None
        self._groups: StepGroups | None = None
        # SQLite on the inline driver: hot writes on sqlite3, grouped (see lite_fast).
        self._lite = LiteFastPath(db, lease, clock) if db.inline_sqlite else None
        if db.is_postgres:
            # Imported here: asyncpg (the postgres extra) is needed only on PostgreSQL.
            from cloudphone.saga.store.pg import PgFastPath

            self._fast = PgFastPath(db.url, lease, clock)
            if step_group > 1 and db.url.get_driver_name() == "asyncpg":
                # A group's progress goes straight to the driver under SQLAlchemy (asyncpg).
                self._groups = StepGroups(self._fast, db.begin, self.commit_step, step_group)

    @property
    def step_groups(self) -> StepGroups | None:
        """Where transactional steps share transactions (PostgreSQL on asyncpg, groups on)."""
        return self._groups

    @property
    def fast_path(self) -> PgFastPath | None:
        """The PostgreSQL fast path (asyncpg), if this store has one."""
        return self._fast

    def first_step_inserts(self) -> FirstStepInserts | None:
        """On PostgreSQL while nothing else is being written (see :mod:`.first_insert`)."""
        groups, fast = self._groups, self._fast
        if fast is None or not (groups.quiet() if groups is not None else fast.idle()):
            return None
        return first_insert.FirstInserts(self)

    @property
    def announces(self) -> bool:
        """PostgreSQL announces new and resumed runs with NOTIFY; SQLite's workers poll."""
        return self.db.is_postgres

    def subscribe(
        self,
        on_notify: Callable[[str], None],
        *,
        on_connect: Callable[[], None] | None = None,
        on_lost: Callable[[BaseException], None] | None = None,
    ) -> Listener | None:
        """A LISTEN connection for announced runs (PostgreSQL only)."""
        if not self.db.is_postgres:
            return None
        return Listener(
            self.db.url, pg_sql.NOTIFY_CHANNEL, on_notify, on_connect=on_connect, on_lost=on_lost
        )

    async def create_schema(self) -> None:
        """Create the engine's tables if missing (production uses the Alembic migrations)."""
        async with self.db.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        """Finish queued writes and close the fast path's connections."""
        if self._groups is not None:
            await self._groups.close()
        if self._fast is not None:
            await self._fast.close()
        if self._lite is not None:
            await self._lite.close()

    @property
    def own_transactions(self) -> int:
        """Write transactions SQLite's fast path committed on its own connection."""
        return self._lite.transactions if self._lite is not None else 0

    # -- writes on the hot path ---------------------------------------------------------

    async def insert_run(
        self, new: NewRun, conn: AsyncConnection | None = None, notify: bool = False
    ) -> tuple[str, bool]:
        """Insert a run (or find the one with the same idempotency key).

        Returns:
            The run id and whether this call inserted it.
        """
        if conn is not None:
            return await self.insert_run_txn(conn, new, notify)
        if self._fast is not None:
            values = self._new_values(new)
            if await self._fast.insert(values, start_detail(new), notify):
                return new.id, True
            return await self._existing(new), False
        if self._lite is not None:
            if await self._lite.insert(self._new_values(new), start_detail(new)):
                return new.id, True
            return await self._existing(new), False
        async with self.db.begin() as own:
            return await self.insert_run_txn(own, new, notify)

    async def insert_run_txn(
        self, conn: AsyncConnection, new: NewRun, notify: bool
    ) -> tuple[str, bool]:
        """Insert a run inside the caller's transaction ``conn``."""
        values = self._new_values(new)
        detail = start_detail(new)
        if self.db.is_postgres:
            item = pg_sql.insert_item(values, detail, notify)
            result = await conn.execute(
                text(pg_sql.INSERT_SQL.replace("$1", ":batch")), {"batch": json.dumps([item])}
            )
            inserted = result.first() is not None
        elif self._lite is not None and (inline := inline_of(conn)) is not None:
            inserted = await self._lite.insert_in(inline, values, detail)
        else:
            inserted = await self._insert_generic(conn, values, detail)
        if inserted:
            return new.id, True
        return await self._existing(new, conn), False

    def _new_values(self, new: NewRun) -> dict[str, Any]:
        return new_run_values(new, self.lease)

    async def _existing(self, new: NewRun, conn: AsyncConnection | None = None) -> str:
        """Id of the run that already holds ``new``'s idempotency key."""
        query = select(saga_runs.c.id).where(
            saga_runs.c.saga_type == new.saga_type,
            saga_runs.c.idempotency_key == new.idempotency_key,
        )
        if conn is not None:
            existing = await conn.scalar(query)
        else:
            async with self.db.read() as own:
                existing = await own.scalar(query)
        if existing is None:  # pragma: no cover - the conflicting row vanished (deleted)
            raise SagaNotFoundError(f"run with idempotency key {new.idempotency_key!r} vanished")
        return str(existing)

    async def _insert_generic(
        self, conn: AsyncConnection, values: dict[str, Any], detail: dict[str, Any]
    ) -> bool:
        if (await conn.execute(lite.INSERT_RUN, lite.insert_params(values))).first() is None:
            return False
        await conn.execute(
            insert(saga_events),
            event_rows(
                values["id"],
                1,
                [NewEvent(EventKind.SAGA_STARTED, at=values["created_at"], detail=detail)],
            ),
        )
        return True

    async def commit(
        self, run_id: str, epoch: int, progress: Progress, seq: int | None = None
    ) -> Committed:
        """Record progress in a transaction of its own (grouped with others on PostgreSQL).

        Fenced by ``epoch`` and, given ``seq``, the run's ``last_seq``. Safe to repeat after
        DatabaseUnavailableError: a write that did land is recognised, not written twice.
        """

        async def write(at: int | None) -> pg_sql.Written | None:
            if self._fast is not None:
                return await self._fast.commit(run_id, epoch, progress, at)
            if self._lite is not None:
                return await self._lite.commit(run_id, epoch, progress, at)
            async with self.db.begin() as conn:
                return await self._commit_generic(conn, run_id, epoch, progress, at)

        return await reconcile.write_fenced(write, self._looker(None), run_id, epoch, progress, seq)

    async def commit_txn(
        self,
        conn: AsyncConnection,
        run_id: str,
        epoch: int,
        progress: Progress,
        seq: int | None = None,
    ) -> Committed:
        """Record progress in ``conn``'s transaction, fenced by ``epoch`` (and ``seq``)."""

        async def write(at: int | None) -> pg_sql.Written | None:
            if self._fast is not None:
                return await self._fast.commit_in(conn, run_id, epoch, progress, at)
            if self._lite is not None and (inline := inline_of(conn)) is not None:
                return await self._lite.commit_in(inline, run_id, epoch, progress, at)
            return await self._commit_generic(conn, run_id, epoch, progress, at)

        return await reconcile.write_fenced(
            write, self._looker(conn), run_id, epoch, progress, seq, in_transaction=True
        )

    async def commit_step(
        self,
        conn: AsyncConnection,
        run_id: str,
        epoch: int,
        progress: Progress,
        seq: int | None,
        writes: Sequence[QueuedWrite],
    ) -> Committed:
        """A lone step's queued writes, then its progress, in ``conn``'s transaction.

        One statement for both on PostgreSQL when it can (see :meth:`.PgFastPath.commit_writing`).
        """
        if len(writes) == 1 and (fast := self._fast) is not None:

            async def write(at: int | None) -> pg_sql.Written | None:
                return await fast.commit_writing(conn, writes[0], run_id, epoch, progress, at)

            try:
                # A fenced statement wrote nothing: a write found after seq is never it.
                return await reconcile.write_fenced(
                    write, self._looker(None), run_id, epoch, progress, seq, in_transaction=True
                )
            except NotCombined:
                pass  # nothing written: the ordinary way
        await run_writes(conn, writes)
        return await self.commit_txn(conn, run_id, epoch, progress, seq)

    async def landed(
        self, run_id: str, epoch: int, seq: int, progress: Progress | None
    ) -> Committed | None:
        """Whether a write after ``seq`` landed (see :func:`.reconcile.landed`)."""
        return reconcile.landed(await self._looker(None)(run_id, seq), run_id, epoch, progress)

    def _looker(self, conn: AsyncConnection | None) -> reconcile.Looker:
        """Reads a run back in ``conn``'s transaction, or in one of its own."""
        if conn is not None:
            return lambda run_id, seq: reconcile.look_txn(conn, run_id, seq)

        async def look(run_id: str, seq: int) -> reconcile.Look | None:
            try:
                async with self.db.read() as own:
                    return await reconcile.look_txn(own, run_id, seq)
            except Exception as error:
                raise_unavailable(error, "reading a run back")
                raise

        return look

    async def _commit_generic(
        self,
        conn: AsyncConnection,
        run_id: str,
        epoch: int,
        progress: Progress,
        seq: int | None,
    ) -> pg_sql.Written | None:
        n = len(progress.events)
        params = lite.commit_params(run_id, epoch, progress, self.clock.now() + self.lease, seq)
        row = (await conn.execute(lite.COMMIT, params)).first()
        if row is None:
            return None
        if n:
            await conn.execute(
                insert(saga_events), event_rows(run_id, row.last_seq - n + 1, progress.events)
            )
        return bool(row.cancel_requested), int(row.last_seq)

    @asynccontextmanager
    async def step_transaction(self, alone: bool = False) -> AsyncIterator[StepTransaction]:
        """A transaction shared by a transactional step and its progress record.

        On PostgreSQL the steps of several runs may share one (see :mod:`.step_group`)
        unless ``alone``. If the database fails under it (the step's own statements
        included, or the step raised because of that), DatabaseUnavailableError leaves the
        block: the transaction did not commit, unless the failure came from its commit (see
        :meth:`landed`).
        """
        try:
            if self._groups is not None and not alone:
                async with self._groups.transaction() as member:
                    yield member
            else:
                async with self.db.begin() as conn:
                    yield StepTx(self, conn)
        except Exception as error:
            # Decided by the error's causes, not by the connection being invalidated: a step
            # timeout that cancels a statement invalidates it too, and is the step's failure.
            raise_unavailable(error, "step transaction")
            raise
