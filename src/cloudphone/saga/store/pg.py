"""PostgreSQL statements of the hot path: each one round trip, one commit.

A data-modifying CTE chains the run's UPDATE (fenced by its epoch) and the INSERT of its
events, whose sequence numbers come from the UPDATE's RETURNING. The events travel as one JSONB
array expanded by ``jsonb_to_recordset``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, Integer, String, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.progress import Progress
from cloudphone.saga.store.rows import progress_values
from cloudphone.saga.store.tables import saga_runs
from cloudphone.saga.store.types import UtcDateTime

NOTIFY_CHANNEL = "cloudphone_sagas"
"""Channel on which new runs are announced to idle workers."""

_JSON = JSONB(none_as_null=True)

_RUN_COLUMNS = ", ".join(c.name for c in saga_runs.c)
_RUN_VALUES = ", ".join(f":{c.name}" for c in saga_runs.c)
_RUN_TYPES = [bindparam(c.name, type_=c.type) for c in saga_runs.c]

_INSERT = """
WITH r AS (
    INSERT INTO saga_runs ({columns}) VALUES ({values})
    ON CONFLICT (saga_type, idempotency_key) DO NOTHING
    RETURNING id, saga_type
), e AS (
    INSERT INTO saga_events (saga_id, seq, kind, step, attempt, detail, at)
    SELECT id, 1, 'saga_started', NULL, NULL, :detail, :created_at FROM r
)
SELECT id{notify} FROM r
"""
_INSERT_QUIET = text(
    _INSERT.format(columns=_RUN_COLUMNS, values=_RUN_VALUES, notify="")
).bindparams(*_RUN_TYPES, bindparam("detail", type_=_JSON))
_INSERT_NOTIFY = text(
    _INSERT.format(
        columns=_RUN_COLUMNS,
        values=_RUN_VALUES,
        notify=f", pg_notify('{NOTIFY_CHANNEL}', saga_type)",
    )
).bindparams(*_RUN_TYPES, bindparam("detail", type_=_JSON))

_COMMIT = text("""
WITH u AS (
    UPDATE saga_runs SET
        status = :status, current_step = :current_step, attempt = :attempt,
        data = COALESCE(:data, data), error = :error,
        compensation_cause = :compensation_cause,
        owner = CASE WHEN :keep_lease THEN owner END,
        lease_expires_at = :lease_expires_at, next_run_at = :next_run_at,
        finished_at = :finished_at, deadline_noted = :deadline_noted,
        cancel_requested = cancel_requested AND NOT :clear_cancel,
        last_seq = last_seq + :n, updated_at = :updated_at
    WHERE id = :id AND epoch = :epoch
    RETURNING last_seq, cancel_requested
), e AS (
    INSERT INTO saga_events (saga_id, seq, kind, step, attempt, detail, at)
    SELECT :id, u.last_seq - :n + x.i, x.kind, x.step, x.attempt, x.detail, x.at
    FROM u CROSS JOIN jsonb_to_recordset(:events)
        AS x(i int, kind text, step text, attempt int, detail jsonb, at timestamptz)
)
SELECT cancel_requested FROM u
""").bindparams(
    bindparam("status", type_=String),
    bindparam("current_step", type_=String),
    bindparam("attempt", type_=Integer),
    bindparam("data", type_=_JSON),
    bindparam("error", type_=_JSON),
    bindparam("compensation_cause", type_=String),
    bindparam("keep_lease", type_=Boolean),
    bindparam("lease_expires_at", type_=UtcDateTime),
    bindparam("next_run_at", type_=UtcDateTime),
    bindparam("finished_at", type_=UtcDateTime),
    bindparam("deadline_noted", type_=Boolean),
    bindparam("clear_cancel", type_=Boolean),
    bindparam("n", type_=Integer),
    bindparam("updated_at", type_=UtcDateTime),
    bindparam("id", type_=String),
    bindparam("epoch", type_=Integer),
    bindparam("events", type_=_JSON),
)

_CLAIM = (
    text("""
WITH c AS (
    SELECT id, owner AS previous_owner FROM saga_runs
    WHERE status IN ('PENDING', 'RUNNING', 'COMPENSATING')
      AND saga_type = ANY(:types) AND next_run_at <= :now
      AND (owner IS NULL OR lease_expires_at < :now OR owner = :own)
    ORDER BY next_run_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE saga_runs r SET
        owner = :me, epoch = r.epoch + 1, lease_expires_at = :lease_until,
        status = CASE WHEN r.status = 'PENDING' THEN 'RUNNING' ELSE r.status END,
        attempt = r.attempt + CASE WHEN c.previous_owner IS NULL THEN 0 ELSE 1 END,
        last_seq = r.last_seq + CASE WHEN c.previous_owner IS NULL THEN 0 ELSE 1 END,
        updated_at = :now
    FROM c WHERE r.id = c.id
    RETURNING r.*, c.previous_owner
), e AS (
    INSERT INTO saga_events (saga_id, seq, kind, step, attempt, detail, at)
    SELECT id, last_seq, 'lease_takeover', current_step, attempt,
           jsonb_build_object('previous_owner', previous_owner, 'worker', CAST(:me AS text)),
           :now
    FROM u WHERE previous_owner IS NOT NULL
)
SELECT * FROM u
""")
    .bindparams(
        bindparam("types", type_=ARRAY(String)),
        bindparam("now", type_=UtcDateTime),
        bindparam("own", type_=String),
        bindparam("limit", type_=Integer),
        bindparam("me", type_=String),
        bindparam("lease_until", type_=UtcDateTime),
    )
    .columns(*saga_runs.c, previous_owner=String)
)


async def insert_run(
    conn: AsyncConnection, values: dict[str, Any], detail: dict[str, Any], notify: bool
) -> bool:
    """Insert a run and its ``saga_started`` event; False when the idempotency key exists."""
    stmt = _INSERT_NOTIFY if notify else _INSERT_QUIET
    row = (await conn.execute(stmt, {**values, "detail": detail})).first()
    return row is not None


async def commit_progress(
    conn: AsyncConnection, run_id: str, epoch: int, progress: Progress, lease: timedelta
) -> bool | None:
    """Apply a Progress if ``epoch`` is current; returns cancel_requested, None if fenced."""
    params = progress_values(progress, lease)
    params.setdefault("data", None)
    params.update(
        id=run_id,
        epoch=epoch,
        keep_lease=progress.keep_lease,
        clear_cancel=progress.clear_cancel,
        n=len(progress.events),
        events=[
            {
                "i": i,
                "kind": e.kind.value,
                "step": e.step,
                "attempt": e.attempt,
                "detail": e.detail,
                "at": e.at.isoformat(),
            }
            for i, e in enumerate(progress.events, start=1)
        ],
    )
    row = (await conn.execute(_COMMIT, params)).first()
    return None if row is None else bool(row[0])


async def claim(
    conn: AsyncConnection,
    worker_id: str,
    limit: int,
    saga_types: Sequence[str],
    now: datetime,
    lease_until: datetime,
    own: str | None,
) -> list[RowMapping]:
    """Lease due runs with ``FOR UPDATE SKIP LOCKED``; records takeovers."""
    result = await conn.execute(
        _CLAIM,
        {
            "types": list(saga_types),
            "now": now,
            "own": own,
            "limit": limit,
            "me": worker_id,
            "lease_until": lease_until,
        },
    )
    return list(result.mappings().all())
