"""Reads of runs and history, and operator actions, for :class:`~.sql.SqlStore`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.errors import SagaNotFoundError
from cloudphone.saga.ports import Clock
from cloudphone.saga.progress import OperatorChange
from cloudphone.saga.records import SagaEvent, SagaRun
from cloudphone.saga.state import SagaStatus
from cloudphone.saga.store import pg_sql, workers
from cloudphone.saga.store.base import NewRun, RunFilter
from cloudphone.saga.store.database import Database
from cloudphone.saga.store.rows import event_from_row, event_rows, run_from_row
from cloudphone.saga.store.tables import saga_events, saga_runs

if TYPE_CHECKING:
    from cloudphone.saga.store.pg import PgFastPath


class RunQueries:
    """The read side of the store, plus the locked read-modify-write of operator actions."""

    db: Database
    lease: timedelta
    clock: Clock
    _fast: PgFastPath | None

    if TYPE_CHECKING:

        async def insert_run_txn(  # noqa: D102 - SqlStore's, documented there
            self, conn: AsyncConnection, new: NewRun, notify: bool
        ) -> tuple[str, bool]: ...

    # -- operator actions ---------------------------------------------------------------

    async def operate(
        self,
        run_id: str,
        decide: Callable[[SagaRun], OperatorChange],
        notify: bool = False,
        spawn: NewRun | None = None,
    ) -> SagaRun:
        """Apply an operator action atomically: lock the run, decide, write, append events.

        ``spawn`` (a fork) is inserted in the same transaction. With ``notify`` (PostgreSQL)
        idle workers are woken when the change commits.
        """
        async with self.db.begin() as conn:
            stmt = select(saga_runs).where(saga_runs.c.id == run_id)
            if self.db.is_postgres:
                stmt = stmt.with_for_update()
            row = (await conn.execute(stmt)).mappings().first()
            if row is None:
                raise SagaNotFoundError(f"no saga run {run_id!r}")
            change = decide(run_from_row(row))
            values = dict(change.values)
            n = len(change.events)
            values["last_seq"] = saga_runs.c.last_seq + n
            if change.bump_epoch:
                values["epoch"] = saga_runs.c.epoch + 1
            updated = (
                (
                    await conn.execute(
                        update(saga_runs)
                        .where(saga_runs.c.id == run_id)
                        .values(values)
                        .returning(*saga_runs.c)
                    )
                )
                .mappings()
                .one()
            )
            if n:
                await conn.execute(
                    insert(saga_events),
                    event_rows(run_id, updated["last_seq"] - n + 1, change.events),
                )
            if notify and change.bump_epoch:
                await conn.execute(select(func.pg_notify(pg_sql.NOTIFY_CHANNEL, row["saga_type"])))
            if spawn is not None:
                await self.insert_run_txn(conn, spawn, notify)
            return run_from_row(updated)

    # -- reads --------------------------------------------------------------------------

    async def get(self, run_id: str) -> SagaRun | None:
        """The run, or None."""
        if self._fast is not None:
            return await self._fast.get(run_id)
        async with self.db.read() as conn:
            row = (
                (await conn.execute(select(saga_runs).where(saga_runs.c.id == run_id)))
                .mappings()
                .first()
            )
        return run_from_row(row) if row is not None else None

    async def find(self, saga_type: str, idempotency_key: str) -> SagaRun | None:
        """The run of ``saga_type`` holding ``idempotency_key``, or None."""
        if self._fast is not None:
            return await self._fast.find(saga_type, idempotency_key)
        async with self.db.read() as conn:
            row = (
                (
                    await conn.execute(
                        select(saga_runs).where(
                            saga_runs.c.saga_type == saga_type,
                            saga_runs.c.idempotency_key == idempotency_key,
                        )
                    )
                )
                .mappings()
                .first()
            )
        return run_from_row(row) if row is not None else None

    async def count_needs_attention(self) -> dict[str, int]:
        """FAILED, unresolved runs per saga type (read from ``ix_saga_runs_status_created``)."""
        r = saga_runs.c
        stmt = (
            select(r.saga_type, func.count())
            .where(r.status == SagaStatus.FAILED.value, r.resolution.is_(None))
            .group_by(r.saga_type)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return {saga_type: int(count) for saga_type, count in rows}

    async def history(self, run_id: str) -> list[SagaEvent]:
        """Every event of the run, in order."""
        async with self.db.read() as conn:
            rows = (
                (
                    await conn.execute(
                        select(saga_events)
                        .where(saga_events.c.saga_id == run_id)
                        .order_by(saga_events.c.seq)
                    )
                )
                .mappings()
                .all()
            )
        return [event_from_row(r) for r in rows]

    async def list_runs(
        self, where: RunFilter, *, limit: int = 50, offset: int = 0
    ) -> list[SagaRun]:
        """Runs matching ``where``, newest first."""
        r = saga_runs.c
        stmt = (
            select(saga_runs)
            .where(*self._conditions(where))
            .order_by(r.created_at.desc(), r.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [run_from_row(row) for row in rows]

    def _conditions(self, where: RunFilter) -> list[Any]:
        """The WHERE conditions of ``where`` (none for a filter that is not given)."""
        r = saga_runs.c
        conditions: list[Any] = []
        if where.status is not None:
            conditions.append(r.status == where.status.value)
        if where.saga_type is not None:
            conditions.append(r.saga_type == where.saga_type)
        if where.started_by is not None:
            conditions.append(r.started_by == where.started_by)
        if where.created_after is not None:
            conditions.append(r.created_at >= where.created_after)
        if where.created_before is not None:
            conditions.append(r.created_at < where.created_before)
        if where.ids is not None:
            conditions.append(r.id.in_(list(where.ids)))
        if where.needs_attention:
            conditions.append(and_(r.status == SagaStatus.FAILED.value, r.resolution.is_(None)))
        if where.orphaned:
            since = workers.live_after(self.clock, self.lease)
            conditions.append(workers.orphaned(since, self.db.is_postgres))
        if where.forked_from is not None:
            conditions.append(r.forked_from == where.forked_from)
        return conditions
