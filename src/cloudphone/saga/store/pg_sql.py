"""The PostgreSQL fast path's statements (see :mod:`.pg`): each one round trip, one commit.

No driver here (asyncpg is imported only by the modules that run on it, once PostgreSQL is
used: :mod:`.pg`, :mod:`.pg_step`, and inside functions of :mod:`.listen` and
:mod:`.step_group`), so the statements and their JSON items serve SQLAlchemy connections
too. Parameters are asyncpg's ``$n``. Items travel as one JSON array expanded by
``jsonb_to_recordset``, so one statement carries many runs (group commit).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cloudphone.saga.progress import Progress
from cloudphone.saga.records import SagaRun
from cloudphone.saga.store.base import SagaTypes, split_types
from cloudphone.saga.store.rows import progress_values, run_from_row

_RUN_COLUMNS = """id, saga_type, status, current_step, attempt, data::text AS data,
    outputs::text AS outputs, error::text AS error, compensation_cause, idempotency_key,
    started_by, epoch, owner, lease_expires_at, next_run_at, deadline_at, deadline_noted,
    cancel_requested, last_seq, resolution, created_at, updated_at, finished_at,
    trace_context::text AS trace_context, retry_since, saga_version, forked_from"""

_UPDATE_FROM_X = """    UPDATE saga_runs r SET
        status = x.status, current_step = x.current_step, attempt = x.attempt,
        -- Only the recorded steps' outputs travel, by step name; a JSON null output stays null.
        outputs = CASE WHEN x.outputs IS NULL THEN r.outputs ELSE r.outputs || x.outputs END,
        error = x.error, retry_since = x.retry_since,
        compensation_cause = x.compensation_cause,
        owner = CASE WHEN x.keep_lease THEN r.owner END,
        lease_expires_at = x.lease_expires_at, next_run_at = x.next_run_at,
        finished_at = x.finished_at, deadline_noted = x.deadline_noted,
        cancel_requested = r.cancel_requested AND NOT x.clear_cancel,
        last_seq = r.last_seq + x.n, updated_at = x.updated_at
    FROM x WHERE r.id = x.id AND r.epoch = x.epoch
      AND (x.seq IS NULL OR r.last_seq = x.seq)"""
"""A batch's progress (the items ``x``) applied to its runs, each fenced by epoch and seq."""

COMMIT_SQL = """
WITH x AS (
    SELECT * FROM jsonb_to_recordset(CAST($1 AS text)::jsonb) AS x(
        id text, epoch bigint, status text, current_step text, attempt int, outputs jsonb,
        error jsonb, compensation_cause text, keep_lease bool,
        lease_expires_at timestamptz, next_run_at timestamptz, finished_at timestamptz,
        deadline_noted bool, clear_cancel bool, updated_at timestamptz, retry_since timestamptz,
        n int, seq bigint, events jsonb)
), u AS (
{update}
      -- The same ids again as an array: the planner sizes it exactly and walks the primary
      -- key, where the JSON function's default estimate (100 rows) made it scan the table.
      AND r.id = ANY(CAST($2 AS text[]))
    RETURNING r.id, r.epoch, r.last_seq, r.cancel_requested
), e AS (
    INSERT INTO saga_events (saga_id, seq, kind, step, attempt, detail, at)
    SELECT u.id, u.last_seq - x.n + ev.i, ev.kind, ev.step, ev.attempt, ev.detail, ev.at
    FROM u JOIN x ON x.id = u.id AND x.epoch = u.epoch
    CROSS JOIN jsonb_to_recordset(x.events)
        AS ev(i int, kind text, step text, attempt int, detail jsonb, at timestamptz)
)
SELECT id, epoch, last_seq, cancel_requested FROM u
""".replace("{update}", _UPDATE_FROM_X)

COMMIT_ONE_CTES = """u AS (
    UPDATE saga_runs r SET
        status = $3, current_step = $4, attempt = $5,
        outputs = CASE WHEN $6::jsonb IS NULL THEN r.outputs ELSE r.outputs || $6::jsonb END,
        error = $7::jsonb, retry_since = $8, compensation_cause = $9,
        owner = CASE WHEN $10 THEN r.owner END,
        lease_expires_at = $11, next_run_at = $12, finished_at = $13, deadline_noted = $14,
        cancel_requested = r.cancel_requested AND NOT $15,
        last_seq = r.last_seq + $16, updated_at = $17
    WHERE r.id = $1 AND r.epoch = $2 AND ($18::bigint IS NULL OR r.last_seq = $18)
    RETURNING r.id, r.epoch, r.last_seq, r.cancel_requested
), e AS (
    INSERT INTO saga_events (saga_id, seq, kind, step, attempt, detail, at)
    SELECT u.id, u.last_seq - $16 + ev.i, ev.kind, ev.step, ev.attempt, ev.detail, ev.at
    FROM u CROSS JOIN unnest($19::text[], $20::text[], $21::int[], $22::jsonb[],
        $23::timestamptz[]) WITH ORDINALITY AS ev(kind, step, attempt, detail, at, i)
)
"""
"""The CTEs of COMMIT_ONE_SQL: ``u`` applies the progress (fenced), ``e`` adds its events."""

COMMIT_ONE_SQL = f"""
WITH {COMMIT_ONE_CTES}SELECT id, epoch, last_seq, cancel_requested FROM u
"""
"""COMMIT_SQL for one run, its values as typed parameters (see :func:`progress_args`): no JSON
for PostgreSQL to parse, no timestamps to format; a third less server CPU per statement."""

COMMIT_MANY_SQL = """
WITH x AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::int[],
        $6::jsonb[], $7::jsonb[], $8::timestamptz[], $9::text[], $10::bool[],
        $11::timestamptz[], $12::timestamptz[], $13::timestamptz[], $14::bool[], $15::bool[],
        $16::int[], $17::timestamptz[], $18::bigint[]) WITH ORDINALITY
    AS x(id, epoch, status, current_step, attempt, outputs, error, retry_since,
        compensation_cause, keep_lease, lease_expires_at, next_run_at, finished_at,
        deadline_noted, clear_cancel, n, updated_at, seq, item)
), u AS (
{update}
      AND r.id = ANY($1::text[])
    RETURNING r.id, r.epoch, r.last_seq, r.cancel_requested
), e AS (
    INSERT INTO saga_events (saga_id, seq, kind, step, attempt, detail, at)
    SELECT u.id, u.last_seq - x.n + ev.i, ev.kind, ev.step, ev.attempt, ev.detail, ev.at
    FROM u JOIN x ON x.id = u.id AND x.epoch = u.epoch
    JOIN unnest($19::int[], $20::int[], $21::text[], $22::text[], $23::int[], $24::jsonb[],
        $25::timestamptz[]) AS ev(item, i, kind, step, attempt, detail, at)
      ON ev.item = x.item
)
SELECT id, epoch, last_seq, cancel_requested FROM u
""".replace("{update}", _UPDATE_FROM_X)
"""COMMIT_SQL with typed parallel arrays instead of a JSON batch (see :func:`progress_columns`):
PostgreSQL parses no JSON, Python formats no timestamps. Events name their item by its place
in the arrays (1-based), as each item's run appears once per batch."""

INSERT_SQL = """
WITH x AS (
    SELECT * FROM jsonb_to_recordset(CAST($1 AS text)::jsonb) AS x(
        id text, saga_type text, status text, current_step text, data jsonb, outputs jsonb,
        idempotency_key text, started_by text, owner text, lease_expires_at timestamptz,
        deadline_at timestamptz, now timestamptz, detail jsonb, notify bool, trace_context jsonb,
        saga_version int, forked_from text)
), r AS (
    INSERT INTO saga_runs (id, saga_type, status, current_step, attempt, data, outputs, error,
        compensation_cause, idempotency_key, started_by, epoch, owner, lease_expires_at,
        next_run_at, deadline_at, deadline_noted, cancel_requested, last_seq, resolution,
        created_at, updated_at, finished_at, trace_context, saga_version, forked_from)
    SELECT id, saga_type, status, current_step, 1, data, outputs, NULL, NULL, idempotency_key,
        started_by, 1, owner, lease_expires_at, now, deadline_at, false, false, 1, NULL,
        now, now, NULL, trace_context, saga_version, forked_from
    FROM x
    ON CONFLICT (saga_type, idempotency_key) DO NOTHING
    RETURNING id
), e AS (
    INSERT INTO saga_events (saga_id, seq, kind, step, attempt, detail, at)
    SELECT x.id, 1, 'saga_started', NULL, NULL, x.detail, x.now FROM r JOIN x ON x.id = r.id
)
SELECT r.id, CASE WHEN x.notify THEN pg_notify('cloudphone_sagas', x.saga_type) END
FROM r JOIN x ON x.id = r.id
"""

INSERT_ONE_SQL = """
WITH r AS (
    INSERT INTO saga_runs (id, saga_type, status, current_step, attempt, data, outputs, error,
        compensation_cause, idempotency_key, started_by, epoch, owner, lease_expires_at,
        next_run_at, deadline_at, deadline_noted, cancel_requested, last_seq, resolution,
        created_at, updated_at, finished_at, trace_context, saga_version, forked_from)
    VALUES ($1, $2, $3, $4, 1, $5::jsonb, $6::jsonb, NULL, NULL, $7, $8, 1, $9, $10, $11, $12,
        false, false, 1, NULL, $11, $11, NULL, $13::jsonb, $14, $15)
    ON CONFLICT (saga_type, idempotency_key) DO NOTHING
    RETURNING id
), e AS (
    INSERT INTO saga_events (saga_id, seq, kind, step, attempt, detail, at)
    SELECT r.id, 1, 'saga_started', NULL, NULL, $16::jsonb, $11 FROM r
)
SELECT r.id, CASE WHEN $17 THEN pg_notify('cloudphone_sagas', $2::text) END FROM r
"""
"""INSERT_SQL for one run, its values as typed parameters (see :func:`insert_args`)."""

CLAIM_SQL = f"""
WITH c AS (
    SELECT id,
        -- Claimed by one of this worker's own claims whose answer was lost ($9: their times),
        -- untouched since: no attempt ran, so taking it is a fresh claim, not a takeover.
        CASE WHEN owner = $5 AND updated_at = ANY($9::timestamptz[]) THEN NULL ELSE owner END
            AS previous_owner
    FROM saga_runs
    WHERE status IN ('PENDING', 'RUNNING', 'COMPENSATING')
      AND saga_type = ANY($1::text[]) AND next_run_at <= $2
      -- The versions this worker drives: $10[i] for $1[i] (NULL: every version of it).
      AND EXISTS (SELECT 1 FROM unnest($1::text[], $10::int[]) AS k(saga_type, saga_version)
                  WHERE k.saga_type = saga_runs.saga_type
                    AND (k.saga_version IS NULL OR k.saga_version = saga_runs.saga_version))
      AND (owner IS NULL OR lease_expires_at < $8 OR owner = $3
           OR (owner = $5 AND updated_at = ANY($9::timestamptz[])))
      AND NOT (id = ANY($7::text[]))
    ORDER BY next_run_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE saga_runs r SET
        owner = $5, epoch = r.epoch + 1, lease_expires_at = $6,
        status = CASE WHEN r.status = 'PENDING' THEN 'RUNNING' ELSE r.status END,
        attempt = r.attempt + CASE WHEN c.previous_owner IS NULL THEN 0 ELSE 1 END,
        last_seq = r.last_seq + CASE WHEN c.previous_owner IS NULL THEN 0 ELSE 1 END,
        updated_at = $2
    FROM c WHERE r.id = c.id
    RETURNING r.*, c.previous_owner
), e AS (
    INSERT INTO saga_events (saga_id, seq, kind, step, attempt, detail, at)
    SELECT id, last_seq, 'lease_takeover', current_step, attempt,
           jsonb_build_object('previous_owner', previous_owner, 'worker', $5::text), $2
    FROM u WHERE previous_owner IS NOT NULL
)
SELECT {_RUN_COLUMNS}, previous_owner FROM u
"""

GET_SQL = f"SELECT {_RUN_COLUMNS} FROM saga_runs WHERE id = $1"

FIND_SQL = f"SELECT {_RUN_COLUMNS} FROM saga_runs WHERE saga_type = $1 AND idempotency_key = $2"

HEARTBEAT_SQL = """
UPDATE saga_runs SET lease_expires_at = $3
WHERE owner = $1 AND id = ANY($2::text[])
  AND status IN ('PENDING', 'RUNNING', 'COMPENSATING')
RETURNING id, epoch, cancel_requested
"""


NOTIFY_CHANNEL = "cloudphone_sagas"
"""Channel on which new and resumed runs are announced to idle workers."""

Written = tuple[bool, int]
"""What a progress write that applied returns: cancel_requested and the run's new last_seq."""


def progress_item(
    run_id: str, epoch: int, progress: Progress, lease_until: datetime, seq: int | None = None
) -> dict[str, Any]:
    """One element of COMMIT_SQL's JSON array: the progress's column values, as JSON.

    ``seq`` is the run's ``last_seq`` the writer expects (None: fenced by the epoch only).
    """
    columns = {
        name: iso(value) if isinstance(value, datetime) else value
        for name, value in progress_values(progress, lease_until).items()
    }
    return {
        **columns,
        "id": run_id,
        "epoch": epoch,
        "outputs": progress.outputs_patch(),
        "keep_lease": progress.keep_lease,
        "clear_cancel": progress.clear_cancel,
        "n": len(progress.events),
        "seq": seq,
        "events": [
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
    }


def progress_args(
    run_id: str, epoch: int, progress: Progress, lease_until: datetime, seq: int | None = None
) -> tuple[Any, ...]:
    """COMMIT_ONE_SQL's parameters: the same write as :func:`progress_item`'s."""
    events, patch = progress.events, progress.outputs_patch()
    return (
        run_id,
        epoch,
        progress.status.value,
        progress.step,
        progress.attempt,
        json.dumps(patch) if patch is not None else None,
        json.dumps(progress.error.to_dict()) if progress.error else None,
        progress.retry_since,
        progress.compensation_cause,
        progress.keep_lease,
        lease_until if progress.keep_lease else None,
        progress.next_run_at,
        progress.now if progress.finished else None,
        progress.deadline_noted,
        progress.clear_cancel,
        len(events),
        progress.now,
        seq,
        [e.kind.value for e in events],
        [e.step for e in events],
        [e.attempt for e in events],
        [json.dumps(e.detail) for e in events],
        [e.at for e in events],
    )


def progress_columns(
    items: Sequence[tuple[str, int, Progress, int | None]], lease_until: datetime
) -> list[list[Any]]:
    """COMMIT_MANY_SQL's parameters: :func:`progress_args` of each item, column by column.

    Each item's events are flattened into the last seven arrays, led by the item's place.
    """
    rows = [progress_args(r, e, p, lease_until, seq) for r, e, p, seq in items]
    columns: list[list[Any]] = [list(c) for c in zip(*(row[:18] for row in rows), strict=True)]
    place: list[int] = []
    ordinal: list[int] = []
    flat: list[list[Any]] = [[], [], [], [], []]
    for item, row in enumerate(rows, start=1):
        for i, event in enumerate(zip(*row[18:], strict=True), start=1):
            place.append(item)
            ordinal.append(i)
            for column, value in zip(flat, event, strict=True):
                column.append(value)
    return [*columns, place, ordinal, *flat]


def insert_item(values: Mapping[str, Any], detail: dict[str, Any], notify: bool) -> dict[str, Any]:
    """One element of INSERT_SQL's JSON array, from the new run's column values."""
    return {
        "id": values["id"],
        "saga_type": values["saga_type"],
        "status": values["status"],
        "current_step": values["current_step"],
        "data": values["data"],
        "outputs": values["outputs"],
        "idempotency_key": values["idempotency_key"],
        "started_by": values["started_by"],
        "owner": values["owner"],
        "lease_expires_at": iso(values["lease_expires_at"]),
        "deadline_at": iso(values["deadline_at"]),
        "now": iso(values["created_at"]),
        "detail": detail,
        "notify": notify,
        "trace_context": values["trace_context"],
        "saga_version": values["saga_version"],
        "forked_from": values["forked_from"],
    }


def insert_args(values: Mapping[str, Any], detail: dict[str, Any], notify: bool) -> tuple[Any, ...]:
    """INSERT_ONE_SQL's parameters: the same insert as :func:`insert_item`'s."""
    trace_context = values["trace_context"]
    return (
        values["id"],
        values["saga_type"],
        values["status"],
        values["current_step"],
        json.dumps(values["data"]),
        json.dumps(values["outputs"]),
        values["idempotency_key"],
        values["started_by"],
        values["owner"],
        values["lease_expires_at"],
        values["created_at"],
        values["deadline_at"],
        json.dumps(trace_context) if trace_context is not None else None,
        values["saga_version"],
        values["forked_from"],
        json.dumps(detail),
        notify,
    )


def type_arrays(saga_types: SagaTypes) -> tuple[list[str], list[int | None]]:
    """CLAIM_SQL's parallel arrays: saga types ($1) and their versions ($10, NULL for any)."""
    names, pairs = split_types(saga_types)
    return [*names, *(n for n, _ in pairs)], [*(None for _ in names), *(v for _, v in pairs)]


def iso(at: datetime | None) -> str | None:
    """A timestamp as ISO 8601 text for a JSON item (None stays None)."""
    return at.isoformat() if at is not None else None


def run_from_record(row: Mapping[str, Any]) -> SagaRun:
    """A SagaRun from a row selected with ``_RUN_COLUMNS`` (JSON columns as text)."""
    error, trace_context = row["error"], row["trace_context"]
    return run_from_row(
        {
            **row,
            "data": json.loads(row["data"]),
            "outputs": json.loads(row["outputs"]),
            "error": json.loads(error) if error is not None else None,
            "trace_context": json.loads(trace_context) if trace_context is not None else None,
        }
    )
