"""The engine's starts: ``start`` and ``start_run``, with the claim by insert.

A run started with a local worker that has room is claimed by its insert (the worker drives
it without a separate claim). A lone such run whose first step is transactional may have its
insert go with that step's commit instead (:mod:`cloudphone.saga.pending`). A start is counted
in ``saga_started_total`` once the run is known to exist: with ``session=``, when the caller
commits.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.definition import InputT, Saga
from cloudphone.saga.errors import DatabaseUnavailableError
from cloudphone.saga.inputs import stored_input
from cloudphone.saga.metrics import SagaMetrics
from cloudphone.saga.pending import PendingInsert, insert_given_back
from cloudphone.saga.ports import Clock
from cloudphone.saga.records import StartedRun
from cloudphone.saga.registry import SagaRegistry
from cloudphone.saga.store.base import NewRun, SagaStore
from cloudphone.saga.store.rows import new_run_values, run_from_row
from cloudphone.saga.tracing import SagaTracer, StartSpan
from cloudphone.saga.worker import Worker


class RunStarts:
    """Starting runs, mixed into :class:`~cloudphone.saga.SagaEngine`."""

    store: SagaStore
    registry: SagaRegistry
    clock: Clock
    metrics: SagaMetrics
    worker_id: str
    lease: timedelta
    insert_with_first_step: bool
    _worker: Worker | None
    _tracer: SagaTracer

    if TYPE_CHECKING:

        def _refuse_nested_write(self, what: str, instead: str) -> None: ...

    async def start(
        self,
        saga: Saga[InputT] | str,
        input: InputT | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        session: AsyncConnection | None = None,
        started_by: str | None = None,
    ) -> str:
        """Insert a run and return its id at once; a worker drives it.

        Args:
            saga: A registered saga, or its name.
            input: The saga input: for a saga with an input type, an instance of it or a
                dict that validates into it; else a JSON object. Stored as JSON (no NUL
                characters: PostgreSQL cannot store them).
            idempotency_key: Same (saga type, key) returns the first run's id.
            session: The caller's transaction to join: the run exists only if it commits.
                Inside a transactional step pass ``ctx.session``.
            started_by: Who asked (a user id), for auditing and access checks.

        Raises:
            UnknownSagaTypeError: The engine knows no saga of that name.
            InvalidSagaInputError: The input does not validate (``errors`` says why), or is
                not JSON; nothing was inserted.
            NestedWriteError: No ``session=``, and this task is inside a write transaction
                of the engine's SQLite database (a transactional step): a transaction of
                its own would wait for that one forever.
        """
        started = await self.start_run(
            saga,
            input,
            idempotency_key=idempotency_key,
            session=session,
            started_by=started_by,
        )
        return started.id

    async def start_run(
        self,
        saga: Saga[InputT] | str,
        input: InputT | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        session: AsyncConnection | None = None,
        started_by: str | None = None,
    ) -> StartedRun:
        """Like :meth:`start`, also saying whether this call created the run.

        ``created`` is False when the idempotency key found an earlier run, also when that
        run was inserted a moment ago by a concurrent call. With ``session=`` the run is
        created only if the caller commits; ``saga_started_total`` counts it then.
        """
        if session is None:
            self._refuse_nested_write(
                "engine.start() without session=",
                "pass session=ctx.session, so the run starts if the step commits",
            )
        definition = self._registered(saga)
        saga_type = definition.name
        data = stored_input(definition, input, idempotency_key, started_by)
        now = self.clock.now()
        worker = self._worker
        # Claim by insert: a local worker with room drives it without a separate claim, unless
        # the caller's transaction might still roll back.
        claim = worker is not None and session is None and worker.try_reserve()
        span = self._tracer.start(saga_type)
        new = NewRun(
            id=str(uuid.uuid4()),
            saga_type=saga_type,
            saga_version=definition.version,
            data=data,
            first_step=definition.steps[0].name,
            idempotency_key=idempotency_key,
            started_by=started_by,
            deadline_at=now + definition.timeout if definition.timeout else None,
            now=now,
            owner=self.worker_id if claim else None,
            trace_context=span.trace_context,
        )
        first = self._deferred(new, definition, worker) if claim else None
        if first is not None and worker is not None:
            return await self._start_deferred(first, worker, span)
        try:
            run_id, inserted = await self.store.insert_run(
                new, session, notify=self.store.announces and not claim
            )
        except BaseException as error:
            span.end(None, "error", error)
            if claim and worker is not None:
                lost = isinstance(error, DatabaseUnavailableError | asyncio.CancelledError)
                worker.unreserve(lost_at=new.now if lost else None)
            raise
        span.end(run_id, "started" if inserted else "existing")
        if inserted:
            self._count_start(saga_type, session)
        if claim and worker is not None:
            if inserted:
                # The row insert_run wrote for a run claimed by its insert (no read needed).
                worker.adopt(run_from_row(new_run_values(new, self.lease)))
            else:
                worker.unreserve()
        elif inserted and worker is not None and (session is None or not self.store.announces):
            # With session= on SQLite the claim queues behind the caller's writer lock, so it
            # sees the run once the caller commits. An announcement (PostgreSQL's NOTIFY)
            # fires on commit instead.
            worker.wake()
        return StartedRun(run_id, inserted)

    def _deferred(
        self, new: NewRun, definition: Saga[Any], worker: Worker | None
    ) -> PendingInsert | None:
        """The run's insert, left to its first step's commit if it may be (see :mod:`.pending`).

        Only for a run alone in the worker: with others in flight their inserts and steps
        are grouped with its own, which is cheaper for all of them.
        """
        if not self.insert_with_first_step or new.idempotency_key is not None:
            return None
        if worker is None or worker.in_flight:
            return None
        if not definition.steps[0].transactional:
            return None
        inserts = self.store.first_step_inserts()
        if inserts is None:
            return None
        saga_type = new.saga_type
        return PendingInsert(
            new, inserts, self.store, on_written=lambda: self._count_start(saga_type, None)
        )

    async def _start_deferred(
        self, first: PendingInsert, worker: Worker, span: StartSpan
    ) -> StartedRun:
        """start_run of a run claimed by its insert, which goes with its first step.

        The start is counted when the run is known to exist (also if the caller stopped
        waiting by then), or here when the runner gave it back.
        """
        new = first.new
        worker.adopt(run_from_row(new_run_values(new, self.lease)), first)
        try:
            if not await first.started():
                # The worker stopped before it was written: insert it for any worker.
                await insert_given_back(self.store, new, notify=self.store.announces)
                self._count_start(new.saga_type, None)
                worker.wake()
        except BaseException as error:
            span.end(None, "error", error)
            raise
        span.end(new.id, "started")
        return StartedRun(new.id, True)

    def _registered(self, saga: Saga[Any] | str) -> Saga[Any]:
        """The newest registered version of ``saga`` (a name or a definition): new runs pin it."""
        return self.registry.require(saga if isinstance(saga, str) else saga.name)

    def _count_start(self, saga_type: str, session: AsyncConnection | None) -> None:
        if session is None:
            self.metrics.record_started(saga_type)
            return
        # The caller's transaction may still roll back (e.g. a quota refused after the
        # start): count the run only once it commits.
        counted = False

        def on_end(committed: bool) -> None:
            nonlocal counted
            if not counted and committed:
                self.metrics.record_started(saga_type)
            counted = True

        event.listen(session.sync_connection, "commit", lambda _conn: on_end(True))
        event.listen(session.sync_connection, "rollback", lambda _conn: on_end(False))
