"""Drives one claimed run: runs attempts, asks :mod:`decide` what follows, commits it.

The runner holds no SQL; it talks to a :class:`ProgressStore`. It stops when the run is
released (retry scheduled, finished) or when its lease is lost.

A database outage is not the step's failure. A progress write that fails with
DatabaseUnavailableError is repeated with backoff until the database answers (every write is
fenced by epoch and ``last_seq``, so a repeat of one that did land is recognised, never
applied twice). A transactional attempt whose transaction was lost with the database is run
again, with the same attempt number, once the stored run shows it did not commit.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga import decide
from cloudphone.saga.context import QueuedWrite, StepContext, WriteQueue, idempotency_key
from cloudphone.saga.definition import Saga, Step, StepKind
from cloudphone.saga.errors import (
    LeaseLostError,
    RetryLater,
    SagaError,
    StaleStateError,
)
from cloudphone.saga.metrics import SagaMetrics
from cloudphone.saga.outage import Outage, PatientStore, StoreFailure
from cloudphone.saga.outputs import RunView, merged_data, private_copy
from cloudphone.saga.ports import Clock, Committed, ProgressStore, StepHooks
from cloudphone.saga.progress import (
    Progress,
    RunState,
    carrying,
    rides_with,
    riding_note,
    state_of,
)
from cloudphone.saga.records import EventKind
from cloudphone.saga.runner_calls import (
    _CUT_SHORT,
    _QUIET,
    AttemptCalls,
    _CancelHit,
    _DeadlineHit,
    _outcome_of,
)
from cloudphone.saga.runner_calls import StepTimeoutError as StepTimeoutError  # part of this API
from cloudphone.saga.state import SagaStatus
from cloudphone.saga.tracing import NO_TRACER, SagaTracer

if TYPE_CHECKING:
    from cloudphone.saga.pending import PendingInsert

log = logging.getLogger("cloudphone.saga")
Queued = tuple[QueuedWrite, ...]
"""The writes a transactional attempt queued (``ctx.write``), in order."""


class WorkerLostError(SagaError):
    """The workers running the step's earlier attempts died or lost their lease."""


Outcome = Callable[[Any, datetime], Progress]
_Call = tuple[Step, datetime, bool, bool, "datetime | None"]
"""How an attempt is called: step, started, compensating, interruptible, deadline."""


class Runner(AttemptCalls):
    """Drives one run for as long as this worker holds its lease."""

    def __init__(
        self,
        saga: Saga,
        state: RunState,
        store: ProgressStore,
        *,
        clock: Clock,
        metrics: SagaMetrics,
        hooks: StepHooks | None = None,
        rand: Callable[[], float] = random.random,
        on_commit: Callable[[RunState, Progress], None] | None = None,
        tracer: SagaTracer = NO_TRACER,
        outage: Outage | None = None,
        carry_plain_steps: bool = True,
        first: PendingInsert | None = None,
    ) -> None:
        self.saga = saga
        self.state = state
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._hooks = hooks
        self._rand = rand
        self._on_commit = on_commit
        self._tracer = tracer
        self._order = tuple(step.name for step in saga.steps)
        self._patient = PatientStore(store, outage or Outage(clock), clock)
        self._task: asyncio.Task[Any] | None = None
        self._interruptible = False
        self._interrupted = False
        self._stop_after_step = False
        self._carry = carry_plain_steps
        self._carried: Progress | None = None
        """A plain step's success not written yet: it rides with the next write (see
        :meth:`_may_carry`). Applied to :attr:`state`, but for ``last_seq``."""
        self._first = first
        """The run's insert, while it waits for the first step's commit (:mod:`.pending`)."""
        if first is not None:
            first.bind(self._patient)

    @property
    def unwritten(self) -> bool:
        """Whether the run is not in the store yet (its insert waits: no lease to renew)."""
        return self._first is not None and not self._first.written

    @property
    def run_id(self) -> str:
        """Id of the run being driven."""
        return self.state.id

    def stop_after_step(self) -> None:
        """Graceful shutdown: finish the attempt in flight, then hand the run back."""
        self._stop_after_step = True

    async def run(self) -> Progress | None:
        """Drive the run; returns the last committed Progress (None if nothing committed)."""
        self._task = asyncio.current_task()
        span = self._tracer.drive(self.state)
        outcome, error = "interrupted", None
        last: Progress | None = None
        try:
            while True:
                try:
                    last = await self._tick()
                except StaleStateError:
                    if not await self._reload():
                        outcome = "stale_state"
                        return None
                    continue
                if last is None or not last.keep_lease or self._stop_after_step:
                    # Never with a success waiting: it waits only for a step that runs next,
                    # and not once a stop is asked (_may_carry).
                    assert self._carried is None
                    outcome = _drive_outcome(last)
                    return last
        except LeaseLostError:
            outcome = "lease_lost"
            log.info(
                "lease lost; another worker or an operator owns the run now",
                extra=self._log_extra(),
            )
            return last
        except asyncio.CancelledError:
            raise
        except Exception as failure:
            # A store error leaves the commit's outcome unknown: stop driving, let the lease
            # expire, and the next owner resumes from whatever did commit.
            outcome, error = "store_failure", failure
            log.exception(
                "progress write failed; the run is left for takeover", extra=self._log_extra()
            )
            return last
        finally:
            if self._first is not None:
                self._first.give_back()  # a no-op once the run was written
            span.end(outcome, error)

    def _log_extra(self) -> dict[str, Any]:
        s = self.state
        return {"saga_id": s.id, "saga_type": s.saga_type, "step": s.step, "attempt": s.attempt}

    async def _tick(self) -> Progress | None:
        s, saga = self.state, self.saga
        now = self._clock.now()
        if not 0 <= s.step_index < len(saga.steps) or saga.steps[s.step_index].name != s.step:
            return await self._commit(decide.on_unknown_step(s, s.step, now))
        if s.status is SagaStatus.COMPENSATING:
            return await self._compensate(saga.steps[s.step_index])
        if s.status is not SagaStatus.RUNNING:
            return None
        if s.cancel_requested:
            return await self._commit(decide.on_cancel(s, saga, now))
        step = saga.steps[s.step_index]
        if step.kind is not StepKind.RETRIABLE:
            if decide.deadline_passed(s, now):
                return await self._commit(decide.on_deadline_exceeded(s, saga, now))
            if s.attempt > saga.policy_for(step).max_attempts:
                lost = WorkerLostError(
                    f"{s.attempt - 1} attempts of {step.name} were lost with their workers"
                    + riding_note(saga, step)
                )
                return await self._commit(
                    decide.on_step_failure(s, saga, lost, now, now, self._rand)
                )
        return await self._forward(step)

    def _context(
        self,
        step: Step,
        compensating: bool,
        session: AsyncConnection | None = None,
        writes: WriteQueue | None = None,
    ) -> StepContext[Any]:
        s = self.state
        # Private copies: a step cannot change the run's data except by returning its output.
        data = private_copy(merged_data(s.input, s.outputs, self._order))
        view = RunView(s.input, s.outputs, self._order, step.index, self.saga.input_type)
        return StepContext(
            saga_id=s.id,
            saga_type=s.saga_type,
            step=step.name,
            attempt=s.attempt,
            data=MappingProxyType(data),
            idempotency_key=idempotency_key(s.id, step.name, compensating=compensating),
            deadline=s.deadline_at,
            compensating=compensating,
            compensation_cause=s.compensation_cause if compensating else None,
            error=s.error,
            _session=session,
            _writes=writes,
            _run=view,
        )

    async def _forward(self, step: Step) -> Progress:
        s, saga, rand = self.state, self.saga, self._rand
        started = self._clock.now()
        bound_by_deadline = step.kind is StepKind.COMPENSATABLE and s.deadline_at is not None

        def ok(output: Any, now: datetime) -> Progress:
            return decide.on_step_success(s, saga, output, started, now)

        def failed(error: Any, now: datetime) -> Progress:
            if isinstance(error, _DeadlineHit):
                return decide.on_deadline_exceeded(s, saga, now, interrupted_at=started)
            if isinstance(error, _CancelHit):
                return decide.on_cancel(s, saga, now, interrupted_at=started)
            return decide.on_step_failure(s, saga, error, started, now, rand)

        return await self._attempt(
            step,
            step.action,
            step.transactional,
            False,
            started,
            ok,
            failed,
            interruptible=step.kind is StepKind.COMPENSATABLE,
            deadline=s.deadline_at if bound_by_deadline else None,
        )

    async def _compensate(self, step: Step) -> Progress:
        s, saga, rand = self.state, self.saga, self._rand
        started = self._clock.now()
        assert step.compensation is not None

        def ok(_output: Any, now: datetime) -> Progress:
            return decide.on_compensation_success(s, saga, started, now)

        def failed(error: Any, now: datetime) -> Progress:
            return decide.on_compensation_failure(s, saga, error, started, now, rand)

        return await self._attempt(
            step,
            step.compensation,
            step.compensation_transactional,
            True,
            started,
            ok,
            failed,
            interruptible=False,
            deadline=None,
        )

    async def _attempt(
        self,
        step: Step,
        fn: Callable[[StepContext], Any],
        transactional: bool,
        compensating: bool,
        started: datetime,
        ok: Outcome,
        failed: Outcome,
        *,
        interruptible: bool,
        deadline: datetime | None,
    ) -> Progress:
        call = (step, started, compensating, interruptible, deadline)
        first = self._first
        if first is not None and not (transactional and not compensating):
            await first.flush()  # on record before anything but a transactional step runs
        span = self._tracer.attempt(self.state, step.name, compensating)
        try:
            if transactional:

                async def attempt(session: AsyncConnection) -> tuple[Progress, Queued]:
                    writes = WriteQueue()
                    ctx = self._context(step, compensating, session, writes)
                    output = await self._call(fn, ctx, *call)
                    return self._with_carried(ok(output, self._clock.now())), writes.take()

                progress, committed = await self._patient.transaction(self.state, attempt, first)
            else:
                output = await self._call(fn, self._context(step, compensating), *call)
                progress = ok(output, self._clock.now())
                committed = None  # written with the next step's transaction (_may_carry)
                if not self._may_carry(step, compensating):
                    progress = self._with_carried(progress)
                    committed = await self._patient.commit(self.state, progress)
        except (LeaseLostError, StaleStateError, asyncio.CancelledError, StoreFailure) as cut:
            cancelled = isinstance(cut, asyncio.CancelledError)
            span.end(_CUT_SHORT.get(type(cut), "interrupted"), None if cancelled else cut)
            raise
        except Exception as error:
            # A DatabaseUnavailableError here came from a plain step's own call (the writes
            # wait an outage out): that call failed, like any outside system's.
            span.end(_outcome_of(error, compensating), None if isinstance(error, _QUIET) else error)
            return await self._commit(self._failed(failed, error, step, started, compensating))
        span.end("compensated" if compensating else "success")
        seconds = (progress.now - started).total_seconds()
        if compensating:
            self._metrics.record_step(self.saga.name, step.name, "compensated", seconds)
            self._metrics.record_compensation(self.saga.name, step.name)
        else:
            self._metrics.record_step(self.saga.name, step.name, "success", seconds)
        if committed is None:
            self._carried = progress
            self.state.apply(progress)  # last_seq stays: nothing was written
        else:
            self._applied(progress, committed)
        return progress

    async def _reload(self) -> bool:
        """Adopt the stored run (a write thought lost landed late); False if not ours now."""
        run = await self._patient.get(self.state.id)
        worker = self.state.worker
        if run is None or run.epoch != self.state.epoch or run.owner != worker:
            return False
        log.info(
            "a progress write thought lost had landed; going on from the stored run",
            extra=self._log_extra(),
        )
        self.state = state_of(run, self.saga)
        self.state.worker = worker
        self._carried = None
        return True

    def _failed(
        self, failed: Outcome, error: Exception, step: Step, started: datetime, compensating: bool
    ) -> Progress:
        now = self._clock.now()
        progress = failed(error, now)
        outcome = _outcome_of(error, compensating)
        self._metrics.record_step(
            self.saga.name, step.name, outcome, (now - started).total_seconds()
        )
        if any(e.kind is EventKind.RETRY_SCHEDULED for e in progress.events):
            self._metrics.record_retry(self.saga.name, step.name)
        if isinstance(error, RetryLater):
            log.info("step postponed: %s", error, extra=self._log_extra())
        else:
            log.warning("attempt failed: %s", error, extra=self._log_extra())
        return progress

    async def _commit(self, progress: Progress) -> Progress:
        if self._first is not None:
            await self._first.flush()  # the run is on record before its progress
        progress = self._with_carried(progress)
        self._applied(progress, await self._patient.commit(self.state, progress))
        return progress

    def _may_carry(self, step: Step, compensating: bool) -> bool:
        """Whether a plain step's success may wait to be written with the next step's write.

        Only when the next step is transactional (:func:`rides_with`; a forward success
        moves to it at once): its transaction then commits both, or neither (a crash in
        between loses the plain step's success, as a crash before its write would: plain
        steps run at least once, and it runs again). Never for the pivot (passing it must be
        on record first), nor while a cancel or a graceful stop is pending.
        """
        if not self._carry or compensating or self._carried is not None:
            return False
        if self.state.cancel_requested or self._stop_after_step:
            return False
        return rides_with(self.saga, step) is not None

    def _with_carried(self, progress: Progress) -> Progress:
        """``progress`` with the waiting plain step's success, if one waits."""
        carried = self._carried
        return progress if carried is None else carrying(progress, carried)

    def _applied(self, progress: Progress, committed: Committed) -> None:
        self._carried = None
        self.state.apply(progress)
        self.state.last_seq = committed.last_seq
        if committed.cancel_requested and not progress.clear_cancel:
            self.state.cancel_requested = True
        if progress.finished:
            seconds = (progress.now - self.state.created_at).total_seconds()
            self._metrics.record_finished(self.saga.name, progress.status, seconds)
        if self._on_commit is not None:
            self._on_commit(self.state, progress)


def _drive_outcome(last: Progress | None) -> str:
    """How a drive that stopped by itself ended: nothing to do, finished, released, handed back."""
    if last is None:
        return "idle"
    if last.finished:
        return "finished"
    return "handed_back" if last.keep_lease else "released"
