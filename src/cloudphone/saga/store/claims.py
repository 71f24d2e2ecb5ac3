"""Claiming runs without the fast path (SQLite): select the due runs, then lease each one.

Every claim bumps the run's epoch; taking over an expired lease counts the lost attempt and
records a ``lease_takeover`` event. On PostgreSQL the same is one statement (``pg_sql``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.progress import NewEvent
from cloudphone.saga.records import EventKind, SagaRun
from cloudphone.saga.state import ACTIVE, SagaStatus
from cloudphone.saga.store.base import SagaTypes, split_types
from cloudphone.saga.store.rows import event_rows, run_from_row
from cloudphone.saga.store.tables import saga_events, saga_runs

_ACTIVE = [s.value for s in ACTIVE]


def covered(saga_types: SagaTypes) -> ColumnElement[bool]:
    """Runs whose (type, version) ``saga_types`` covers (a bare name: every version)."""
    r = saga_runs.c
    names, pairs = split_types(saga_types)
    return or_(
        r.saga_type.in_(names),
        *(and_(r.saga_type == name, r.saga_version == version) for name, version in pairs),
    )


async def claim_txn(
    conn: AsyncConnection,
    worker_id: str,
    limit: int,
    saga_types: SagaTypes,
    now: datetime,
    takeover_before: datetime,
    own: str | None,
    exclude: Sequence[str],
    lease_end: Callable[[], datetime],
) -> list[tuple[SagaRun, str | None]]:
    """Lease up to ``limit`` due runs in ``conn``'s transaction (see ``SqlStore.claim``).

    Returns each claimed run with the owner whose expired lease it took over (or None).
    """
    r = saga_runs.c
    free = or_(r.owner.is_(None), r.lease_expires_at < takeover_before)
    if own is not None:
        free = or_(free, r.owner == own)
    rows = (
        await conn.execute(
            select(r.id, r.owner)
            .where(
                r.status.in_(_ACTIVE),
                covered(saga_types),
                r.next_run_at <= now,
                free,
                r.id.not_in(list(exclude)),
            )
            .order_by(r.next_run_at)
            .limit(limit)
        )
    ).all()
    claimed: list[tuple[SagaRun, str | None]] = []
    for run_id, previous in rows:
        takeover = previous is not None
        updated = (
            (
                await conn.execute(
                    update(saga_runs)
                    .where(r.id == run_id)
                    .values(
                        owner=worker_id,
                        epoch=r.epoch + 1,
                        lease_expires_at=lease_end(),
                        status=case(
                            (r.status == SagaStatus.PENDING.value, SagaStatus.RUNNING.value),
                            else_=r.status,
                        ),
                        attempt=r.attempt + (1 if takeover else 0),
                        last_seq=r.last_seq + (1 if takeover else 0),
                        updated_at=now,
                    )
                    .returning(*saga_runs.c)
                )
            )
            .mappings()
            .one()
        )
        if takeover:
            await conn.execute(
                insert(saga_events),
                event_rows(
                    run_id,
                    updated["last_seq"],
                    [
                        NewEvent(
                            EventKind.LEASE_TAKEOVER,
                            at=now,
                            step=updated["current_step"],
                            attempt=updated["attempt"],
                            detail={"previous_owner": previous, "worker": worker_id},
                        )
                    ],
                ),
            )
        claimed.append((run_from_row(updated), previous))
    return claimed
