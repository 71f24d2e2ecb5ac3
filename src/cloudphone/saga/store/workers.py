"""Worker presence in SQL (``saga_workers``) and the runs no live worker drives (orphans).

A worker's ``sagas`` column is a JSON array of ``[type, version]`` arrays. The live workers'
pairs come out of it as a subquery (``jsonb_array_elements`` on PostgreSQL, ``json_each`` on
SQLite), which the active runs are anti-joined against: the orphan count is a single query on
either database.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Subquery,
    and_,
    cast,
    delete,
    exists,
    func,
    literal,
    literal_column,
    not_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cloudphone.saga.definition import SagaKey
from cloudphone.saga.ports import Clock
from cloudphone.saga.state import ACTIVE
from cloudphone.saga.store.base import LIVE_LEASES, WorkerPresence
from cloudphone.saga.store.tables import saga_runs, saga_workers

if TYPE_CHECKING:
    from cloudphone.saga.store.database import Database

_ACTIVE = [s.value for s in ACTIVE]


def live_after(clock: Clock, lease: timedelta) -> datetime:
    """Workers refreshed at or after this time are live."""
    return clock.now() - LIVE_LEASES * lease


def _known(since: datetime, postgres: bool) -> Subquery:
    """The (saga_type, saga_version) pairs of the workers refreshed ``since`` (a subquery)."""
    w = saga_workers.c
    name: ColumnElement[Any]
    version: ColumnElement[Any]
    if postgres:
        each = func.jsonb_array_elements(w.sagas).table_valued("value").alias("k")
        name = each.c.value.op("->>")(literal(0, Integer))
        version = cast(each.c.value.op("->>")(literal(1, Integer)), Integer)
    else:
        each = func.json_each(w.sagas).table_valued("value").alias("k")
        name = func.json_extract(each.c.value, "$[0]")
        version = func.json_extract(each.c.value, "$[1]")
    return (
        select(name.label("saga_type"), version.label("saga_version"))
        # The function reads the joined row's column: a lateral join, hence ON true.
        .select_from(saga_workers.join(each, true()))
        .where(w.heartbeat_at >= since)
        .subquery("known")
    )


def orphaned(since: datetime, postgres: bool) -> ColumnElement[bool]:
    """Active ``saga_runs`` rows whose (type, version) no worker refreshed ``since`` drives.

    The live workers' pairs are a handful of rows: the database anti-joins the active runs
    against them (a hash on PostgreSQL) instead of reading each worker's JSON per run.
    """
    r = saga_runs.c
    known = _known(since, postgres)
    knows = exists(
        select(literal_column("1"))
        .select_from(known)
        .where(known.c.saga_type == r.saga_type, known.c.saga_version == r.saga_version)
    )
    return and_(r.status.in_(_ACTIVE), not_(knows))


def _row(presence: WorkerPresence) -> dict[str, Any]:
    return {
        "worker_id": presence.worker_id,
        "sagas": [[name, version] for name, version in presence.sagas],
        "started_at": presence.started_at,
        "heartbeat_at": presence.heartbeat_at,
        "host": presence.host,
        "pid": presence.pid,
    }


class PresenceQueries:
    """``saga_workers`` reads and writes, and the orphan count, for the SQL store."""

    db: Database
    lease: timedelta
    clock: Clock

    async def announce_presence(self, presence: WorkerPresence) -> None:
        """Insert or refresh the worker's entry."""
        row = _row(presence)
        insert = pg_insert if self.db.is_postgres else sqlite_insert
        stmt = insert(saga_workers).values(row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[saga_workers.c.worker_id],
            set_={name: stmt.excluded[name] for name in row if name != "worker_id"},
        )
        async with self.db.begin() as conn:
            await conn.execute(stmt)

    async def withdraw_presence(self, worker_id: str) -> None:
        """Delete the worker's entry."""
        async with self.db.begin() as conn:
            await conn.execute(delete(saga_workers).where(saga_workers.c.worker_id == worker_id))

    async def live_workers(self) -> list[WorkerPresence]:
        """Entries refreshed within the last two leases, by worker id."""
        w = saga_workers.c
        stmt = (
            select(saga_workers)
            .where(w.heartbeat_at >= live_after(self.clock, self.lease))
            .order_by(w.worker_id)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [
            WorkerPresence(
                worker_id=row["worker_id"],
                sagas=tuple((str(name), int(version)) for name, version in row["sagas"]),
                started_at=row["started_at"],
                heartbeat_at=row["heartbeat_at"],
                host=row["host"],
                pid=row["pid"],
            )
            for row in rows
        ]

    async def count_orphaned(self) -> dict[SagaKey, int]:
        """Orphaned runs per (type, version), in one query."""
        r = saga_runs.c
        since = live_after(self.clock, self.lease)
        stmt = (
            select(r.saga_type, r.saga_version, func.count())
            .where(orphaned(since, self.db.is_postgres))
            .group_by(r.saga_type, r.saga_version)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return {(saga_type, int(version)): int(n) for saga_type, version, n in rows}
