"""Claims and leases of runs in SQL, for :class:`~.sql.SqlStore`: claim, heartbeat, hand-back.

A claim leases due runs to a worker and bumps their epoch; a heartbeat extends the leases the
worker still holds; a hand-back (at shutdown) makes its runs due at once for any worker. On
PostgreSQL claims and heartbeats go through the fast path (see :mod:`.pg`), on SQLite's inline
driver claims through its own (see :mod:`.lite_claims`); otherwise :func:`.claims.claim_txn`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update

from cloudphone.saga.ports import Clock
from cloudphone.saga.state import ACTIVE
from cloudphone.saga.store import claims
from cloudphone.saga.store.base import Claimed, ClaimRequest, SagaTypes
from cloudphone.saga.store.database import Database
from cloudphone.saga.store.disconnects import raise_unavailable
from cloudphone.saga.store.tables import saga_runs

if TYPE_CHECKING:
    from cloudphone.saga.store.lite_fast import LiteFastPath
    from cloudphone.saga.store.pg import PgFastPath

_ACTIVE = [s.value for s in ACTIVE]


class RunLeases:
    """Claiming runs and keeping or handing back their leases, mixed into the SQL store."""

    db: Database
    lease: timedelta
    clock: Clock
    _fast: PgFastPath | None
    _lite: LiteFastPath | None

    async def claim(self, request: ClaimRequest) -> list[Claimed]:
        """Lease up to ``limit`` due runs: unowned, lease expired, or (``reclaim_own``) ours.

        Every claim bumps the run's epoch; taking over an expired lease counts the lost attempt
        and records a ``lease_takeover`` event. ``exclude`` lists runs the caller is driving:
        their leases may have lapsed while it waited (for SQLite's writer lock, say), but
        taking them over from itself would only restart their steps. Only leases that expired
        before ``takeover_before`` (default ``now``) are taken over. ``lost_claims`` are the
        times of this worker's claims (or claiming inserts) whose answer was lost: runs they
        claimed, untouched since, are claimed again without counting an attempt.
        """
        r = request
        if r.limit <= 0 or not r.saga_types:
            return []
        if self._fast is not None:
            rows = await self._fast.claim(r)
        elif self._lite is not None:
            # SQLite (here and below) runs in this process: a claim's answer is never lost,
            # so lost_claims is moot.
            rows = await self._lite.claim(r)
        else:
            async with self.db.begin() as conn:
                rows = await claims.claim_txn(conn, r, self._lease_end)
        return [Claimed(run, previous) for run, previous in rows]

    def _lease_end(self) -> datetime:
        return self.clock.now() + self.lease

    async def heartbeat(
        self, worker_id: str, run_ids: Sequence[str]
    ) -> dict[str, tuple[int, bool]]:
        """Extend the leases this worker still holds.

        Returns:
            For each run still held: its epoch and whether cancel was requested. Runs missing
            from the answer were taken over or fenced by an operator.
        """
        if not run_ids:
            return {}
        if self._fast is not None:
            return await self._fast.heartbeat(worker_id, run_ids)
        r = saga_runs.c
        async with self.db.begin() as conn:
            # The lease end is taken once the writer lock is held, never before.
            stmt = (
                update(saga_runs)
                .where(r.owner == worker_id, r.id.in_(list(run_ids)), r.status.in_(_ACTIVE))
                .values(lease_expires_at=self.clock.now() + self.lease)
                .returning(r.id, r.epoch, r.cancel_requested)
            )
            rows = (await conn.execute(stmt)).all()
        return {row.id: (row.epoch, bool(row.cancel_requested)) for row in rows}

    async def release(self, worker_id: str, run_ids: Sequence[str], now: datetime) -> int:
        """Hand runs back at shutdown: due now for any worker; the epoch bump fences us off."""
        if not run_ids:
            return 0
        r = saga_runs.c
        stmt = (
            update(saga_runs)
            .where(r.owner == worker_id, r.id.in_(list(run_ids)), r.status.in_(_ACTIVE))
            .values(
                owner=None,
                lease_expires_at=None,
                next_run_at=now,
                epoch=r.epoch + 1,
                updated_at=now,
            )
        )
        try:
            async with self.db.begin() as conn:
                result = await conn.execute(stmt)
        except Exception as error:
            raise_unavailable(error, "hand-back")
            raise
        return int(result.rowcount)

    async def next_due(self, saga_types: SagaTypes) -> datetime | None:
        """Earliest time an unowned active run of these types (and versions) becomes due."""
        r = saga_runs.c
        try:
            async with self.db.read() as conn:
                due: datetime | None = await conn.scalar(
                    select(func.min(r.next_run_at)).where(
                        r.status.in_(_ACTIVE), claims.covered(saga_types), r.owner.is_(None)
                    )
                )
        except Exception as error:
            raise_unavailable(error, "next due run")
            raise
        return due
