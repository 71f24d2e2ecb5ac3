"""A new run's insert written with its first step's commit (see :mod:`cloudphone.saga.pending`).

When the engine defers the insert of a run claimed by its insert, the run's first step (a
transactional one) runs in a transaction of its own whose commit writes the run as it stands
after that step: the run's row, its ``saga_started`` event and the step's events, with the
step's business writes, in that one transaction. Nothing of the run exists before it commits;
if it does not commit, nothing of it does.

On PostgreSQL (asyncpg), when the step sent nothing on ``ctx.session`` and queued at most one
write that can be a CTE, all of it is one statement (:data:`INSERT_PAST_FIRST_SQL`, after the
write's CTE): one round trip for the start and the first step together. Otherwise the step's
queued writes run, then that statement (without a write) in the step's transaction, before
its COMMIT; on another driver the run's insert and the progress write, the ordinary way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.context import QueuedWrite
from cloudphone.saga.errors import LeaseLostError
from cloudphone.saga.ports import Committed, StepTransaction
from cloudphone.saga.progress import Progress
from cloudphone.saga.records import EventKind
from cloudphone.saga.store.base import NewRun, TakeInsert
from cloudphone.saga.store.pg_write import NotCombined
from cloudphone.saga.store.rows import new_run_values, progress_values, start_detail
from cloudphone.saga.store.step_tx import StepTx, Writes
from cloudphone.saga.store.writes import run_writes

if TYPE_CHECKING:
    from cloudphone.saga.store.sql import SqlStore

INSERT_PAST_FIRST_SQL = """r AS (
    INSERT INTO saga_runs (id, saga_type, status, current_step, attempt, data, outputs, error,
        compensation_cause, idempotency_key, started_by, epoch, owner, lease_expires_at,
        next_run_at, deadline_at, deadline_noted, cancel_requested, last_seq, resolution,
        created_at, updated_at, finished_at, trace_context, saga_version, forked_from,
        retry_since)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb, $9, NULL, $10, 1, $11, $12,
        $13, $14, $15, false, $16, NULL, $17, $18, $19, $20::jsonb, $21, $22, $23)
    RETURNING id, epoch, last_seq, cancel_requested
), e AS (
    INSERT INTO saga_events (saga_id, seq, kind, step, attempt, detail, at)
    SELECT r.id, ev.i, ev.kind, ev.step, ev.attempt, ev.detail, ev.at
    FROM r CROSS JOIN unnest($24::text[], $25::text[], $26::int[], $27::jsonb[],
        $28::timestamptz[]) WITH ORDINALITY AS ev(kind, step, attempt, detail, at, i)
)
SELECT id, epoch, last_seq, cancel_requested FROM r
"""
"""The CTEs and SELECT that insert a run as it stands after ``progress`` (its first step):
the row, then ``saga_started`` (seq 1) and the progress's events (seq 2…). Without a write
it is prefixed with ``WITH``; with one, it follows the write's CTE (see :mod:`.pg_write`)."""

INSERT_PAST_FIRST_ALONE = f"WITH {INSERT_PAST_FIRST_SQL}"
"""The statement without a write before it."""


def insert_past_first_args(
    new: NewRun, progress: Progress, lease: timedelta, lease_until: datetime
) -> tuple[Any, ...]:
    """:data:`INSERT_PAST_FIRST_SQL`'s parameters: ``new`` with ``progress`` applied.

    What the insert and then the progress write would leave, column by column: the progress
    sets what it sets (as in the progress UPDATE), its outputs patch merges into the run's
    outputs, and ``last_seq`` counts the start's event and the progress's.
    """
    if new.idempotency_key is not None:
        raise ValueError("a run with an idempotency key is inserted before its first step")
    values = {**new_run_values(new, lease), **progress_values(progress, lease_until)}
    outputs = {**values["outputs"], **(progress.outputs_patch() or {})}
    error, trace_context = values["error"], values["trace_context"]
    events = progress.events
    return (
        values["id"],
        values["saga_type"],
        values["status"],
        values["current_step"],
        values["attempt"],
        json.dumps(values["data"]),
        json.dumps(outputs),
        json.dumps(error) if error is not None else None,
        values["compensation_cause"],
        values["started_by"],
        new.owner if progress.keep_lease else None,
        values["lease_expires_at"],
        values["next_run_at"],
        values["deadline_at"],
        values["deadline_noted"],
        1 + len(events),
        values["created_at"],
        values["updated_at"],
        values["finished_at"],
        json.dumps(trace_context) if trace_context is not None else None,
        values["saga_version"],
        values["forked_from"],
        values["retry_since"],
        [EventKind.SAGA_STARTED.value, *(e.kind.value for e in events)],
        [None, *(e.step for e in events)],
        [None, *(e.attempt for e in events)],
        [json.dumps(start_detail(new)), *(json.dumps(e.detail) for e in events)],
        [new.now, *(e.at for e in events)],
    )


class _FirstStepTx(StepTx):
    """The transaction of a deferred run's first step: its commit inserts the run too."""

    def __init__(self, store: SqlStore, conn: AsyncConnection, take: TakeInsert) -> None:
        super().__init__(store, conn)
        self._take = take

    async def _record(
        self, run_id: str, epoch: int, progress: Progress, seq: int | None, writes: Writes
    ) -> Committed:
        new = await self._take()
        if new is None:  # inserted by itself meanwhile: recorded as for any run
            return await super()._record(run_id, epoch, progress, seq, writes)
        assert (run_id, epoch) == (new.id, 1), "a deferred run's first commit"
        return await self._insert(new, progress, writes)

    async def _insert(
        self, new: NewRun, progress: Progress, writes: Sequence[QueuedWrite]
    ) -> Committed:
        store, conn = self._store, self._conn
        fast = store.fast_path
        if fast is not None and len(writes) == 1:
            try:
                return Committed.of(await fast.commit_inserting(conn, new, progress, writes[0]))
            except NotCombined:
                pass  # nothing written: the ordinary way
        await run_writes(conn, writes)
        if fast is not None:
            try:  # after the step's statements, in their transaction (else alone)
                return Committed.of(await fast.commit_inserting(conn, new, progress, None))
            except NotCombined:
                pass  # not asyncpg
        await store.insert_run_txn(conn, new, notify=False)
        return await store.commit_txn(conn, new.id, 1, progress, 1)


class FirstInserts:
    """:class:`~.base.FirstStepInserts` of a :class:`~.sql.SqlStore`."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    @asynccontextmanager
    async def first_step_transaction(self, take: TakeInsert) -> AsyncIterator[StepTransaction]:
        """A transaction of its own for a deferred run's first step (see the protocol)."""
        async with self._store.step_transaction(alone=True) as tx:
            yield _FirstStepTx(self._store, tx.session, take)

    async def inserted(self, new: NewRun, progress: Progress | None) -> Committed | None:
        """After a lost answer: whether the run was inserted with ``progress`` (None: not)."""
        try:
            return await self._store.landed(new.id, 1, 1, progress)
        except LeaseLostError:
            # The run does not exist (nobody else holds a run that was never inserted).
            if await self._store.get(new.id) is None:
                return None
            raise
