"""Worker presence in SQL (``saga_workers``) and the runs no live worker drives (orphans).

A worker's ``sagas`` column is a JSON array of ``[type, version]`` arrays. Whether a live
worker drives a run is one correlated ``EXISTS``: JSONB containment on PostgreSQL,
``json_each`` on SQLite, so the orphan count is a single query on either.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    func,
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


def orphaned(since: datetime, postgres: bool) -> ColumnElement[bool]:
    """Active ``saga_runs`` rows whose (type, version) no worker refreshed ``since`` drives."""
    r, w = saga_runs.c, saga_workers.c
    if postgres:
        pair = func.jsonb_build_array(func.jsonb_build_array(r.saga_type, r.saga_version))
        knows: ColumnElement[bool] = exists(
            select(literal_column("1")).where(w.heartbeat_at >= since, w.sagas.op("@>")(pair))
        )
    else:
        each = func.json_each(w.sagas).table_valued("value").alias("k")
        knows = exists(
            select(literal_column("1"))
            # json_each reads the joined row's column: a lateral join, hence ON true.
            .select_from(saga_workers.join(each, true()))
            .where(
                w.heartbeat_at >= since,
                func.json_extract(each.c.value, "$[0]") == r.saga_type,
                func.json_extract(each.c.value, "$[1]") == r.saga_version,
            )
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
