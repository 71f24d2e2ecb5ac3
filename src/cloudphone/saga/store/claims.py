"""Claiming runs without the fast path (SQLite): select the due runs, then lease each one.

Every claim bumps the run's epoch; taking over an expired lease counts the lost attempt and
records a ``lease_takeover`` event. On PostgreSQL the same is one statement (``pg_sql``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    and_,
    bindparam,
    case,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.progress import NewEvent
from cloudphone.saga.records import EventKind, SagaRun
from cloudphone.saga.state import ACTIVE, SagaStatus
from cloudphone.saga.store.base import ClaimRequest, SagaTypes, split_types
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


_LOST = bindparam("b_lost", type_=Integer)

LEASE_ONE = (
    update(saga_runs)
    .where(saga_runs.c.id == bindparam("b_id", type_=String))
    .values(
        owner=bindparam("b_owner", type_=String),
        epoch=saga_runs.c.epoch + 1,
        lease_expires_at=bindparam("b_until", type_=saga_runs.c.lease_expires_at.type),
        status=case(
            (saga_runs.c.status == SagaStatus.PENDING.value, SagaStatus.RUNNING.value),
            else_=saga_runs.c.status,
        ),
        # A takeover counts the lost attempt and makes room for its event.
        attempt=saga_runs.c.attempt + _LOST,
        last_seq=saga_runs.c.last_seq + _LOST,
        updated_at=bindparam("b_now", type_=saga_runs.c.updated_at.type),
    )
    .returning(*saga_runs.c)
)
"""Lease one run to ``b_owner``, bumping its epoch (``b_lost``: 1 for a takeover, which
counts the lost attempt); returns the whole row."""


def lease_params(
    run_id: str, worker_id: str, until: datetime, now: datetime, previous: str | None
) -> dict[str, Any]:
    """LEASE_ONE's parameters for ``run_id``, taken over from ``previous`` (if any)."""
    lost = 1 if previous is not None else 0
    return {"b_id": run_id, "b_owner": worker_id, "b_until": until, "b_now": now, "b_lost": lost}


def takeover_rows(
    run: SagaRun, previous: str, worker_id: str, now: datetime
) -> list[dict[str, Any]]:
    """The ``lease_takeover`` event of a run just leased from ``previous``, as its row."""
    event = NewEvent(
        EventKind.LEASE_TAKEOVER,
        at=now,
        step=run.current_step,
        attempt=run.attempt,
        detail={"previous_owner": previous, "worker": worker_id},
    )
    return event_rows(run.id, run.last_seq, [event])


async def claim_txn(
    conn: AsyncConnection, request: ClaimRequest, lease_end: Callable[[], datetime]
) -> list[tuple[SagaRun, str | None]]:
    """Lease up to ``request.limit`` due runs in ``conn``'s transaction (see ``SqlStore.claim``).

    Returns each claimed run with the owner whose expired lease it took over (or None).
    """
    r = saga_runs.c
    worker_id, now, own = request.worker_id, request.now, request.own
    free = or_(r.owner.is_(None), r.lease_expires_at < request.before)
    if own is not None:
        free = or_(free, r.owner == own)
    rows = (
        await conn.execute(
            select(r.id, r.owner)
            .where(
                r.status.in_(_ACTIVE),
                covered(request.saga_types),
                r.next_run_at <= now,
                free,
                r.id.not_in(list(request.exclude)),
            )
            .order_by(r.next_run_at)
            .limit(request.limit)
        )
    ).all()
    claimed: list[tuple[SagaRun, str | None]] = []
    for run_id, previous in rows:
        params = lease_params(run_id, worker_id, lease_end(), now, previous)
        run = run_from_row((await conn.execute(LEASE_ONE, params)).mappings().one())
        if previous is not None:
            await conn.execute(insert(saga_events), takeover_rows(run, previous, worker_id, now))
        claimed.append((run, previous))
    return claimed
