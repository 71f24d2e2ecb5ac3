"""A worker: claims due runs under a lease, drives them with runners, renews the leases.

While the database is unreachable the claim loop and the lease renewals back off (capped
exponential delays, one shared :class:`~cloudphone.saga.outage.Outage` logging it at a bounded
rate); runners wait for their pending writes and are never stopped because a renewal failed.
Leases that ran out during the outage are not taken over until their owners had one lease to
renew them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cloudphone.saga import timers
from cloudphone.saga.definition import Saga, SagaKey
from cloudphone.saga.errors import DatabaseUnavailableError
from cloudphone.saga.metrics import SagaMetrics
from cloudphone.saga.outage import Backoff, Outage
from cloudphone.saga.ports import Clock, StepHooks, Timer
from cloudphone.saga.presence import Presence
from cloudphone.saga.progress import Progress, RunState, state_of
from cloudphone.saga.records import SagaRun
from cloudphone.saga.runner import Runner
from cloudphone.saga.state import SagaStatus
from cloudphone.saga.store.base import ClaimRequest, SagaStore
from cloudphone.saga.tracing import NO_TRACER, SagaTracer

if TYPE_CHECKING:
    from cloudphone.saga.pending import PendingInsert

log = logging.getLogger("cloudphone.saga")

CommitCallback = Callable[[RunState, Progress], None]

ATTENTION_INTERVAL = timedelta(seconds=30)
"""How often a worker refreshes the ``saga_needs_attention`` gauge (and when a run it drives
ends, or an operator acts through its engine)."""
CLAIM_BACKOFF = (0.05, 2.0)
"""First and largest delay (seconds) between claim rounds while the database is down."""
MAX_LOST_CLAIMS = 1000
"""Lost claims remembered at most (beyond that, such runs wait for their lease to expire)."""


class Worker:
    """Drives up to ``concurrency`` runs at once for one worker id.

    Claims bump each run's fencing epoch; a heartbeat renews the leases every third of the
    lease and interrupts runs that were taken over or cancelled. Retries wake it at their
    ``next_run_at``; on PostgreSQL a NOTIFY wakes it for new runs; otherwise it polls.
    """

    def __init__(
        self,
        *,
        store: SagaStore,
        sagas: Mapping[SagaKey, Saga],
        worker_id: str,
        concurrency: int,
        clock: Clock,
        metrics: SagaMetrics,
        hooks: StepHooks | None,
        poll_interval: timedelta,
        on_commit: CommitCallback,
        rand: Callable[[], float] = random.random,
        tracer: SagaTracer = NO_TRACER,
        carry_plain_steps: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.worker_id = worker_id
        self.concurrency = concurrency
        self._store = store
        self._sagas = sagas
        # (type, version) pairs: a worker claims only the runs it has the definition of.
        self._types: list[SagaKey] = sorted(sagas)
        self._clock = clock
        self._metrics = metrics
        self._hooks = hooks
        self._poll = poll_interval.total_seconds()
        self._on_commit = on_commit
        self._rand = rand
        self._tracer = tracer
        self._carry = carry_plain_steps
        self._runners: dict[str, tuple[Runner, asyncio.Task[None]]] = {}
        self._reserved = 0
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._timers: list[Timer] = []
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._attention_task: asyncio.Task[None] | None = None
        self._attention_due = asyncio.Event()
        self._handback: set[str] = set()
        self._backlog = False  # the last claim filled every free slot: more may be waiting
        self.alive_at: datetime | None = None
        """Last time the claim loop or heartbeat completed a round (for readiness checks)."""
        self.outage = Outage(clock)
        """What this worker saw of the database being down (shared with its runners)."""
        self._claim_backoff = Backoff(*CLAIM_BACKOFF, rand=rand)
        self._presence = Presence(store, worker_id, self._types, metrics, self.outage)
        # Times of claims (and claiming inserts) whose answer was lost: they may have landed.
        self._lost_claims: list[datetime] = []

    # -- capacity shared with start() ---------------------------------------------------

    def try_reserve(self) -> bool:
        """Reserve a slot for a run the caller is about to insert already claimed."""
        if self._stopping or len(self._runners) + self._reserved >= self.concurrency:
            return False
        self._reserved += 1
        return True

    def unreserve(self, *, lost_at: datetime | None = None) -> None:
        """Give back a slot reserved with try_reserve (the insert found an existing run).

        ``lost_at``: the insert's answer was lost; it may have claimed a run at that time,
        which the next claim round then takes as a fresh claim.
        """
        self._reserved -= 1
        if lost_at is not None:
            self._claim_lost(lost_at)

    def _claim_lost(self, at: datetime) -> None:
        if len(self._lost_claims) < MAX_LOST_CLAIMS:
            self._lost_claims.append(at)

    def adopt(self, run: SagaRun, first: PendingInsert | None = None) -> None:
        """Drive a run inserted already claimed by this worker (uses a reserved slot).

        With ``first`` the run is not inserted yet: its first step's commit inserts it (see
        :mod:`.pending`); its lease is renewed only once it exists.
        """
        self._reserved -= 1
        self._spawn(run, first)

    def wake(self) -> None:
        """Look for due work now."""
        self._wakeup.set()

    def refresh_attention(self) -> None:
        """Count the runs that need attention again soon (an operator acted, a run ended)."""
        self._attention_due.set()

    def database_lost(self, what: str, error: BaseException) -> None:
        """Another part of the process (the LISTEN connection) saw the database go away."""
        self.outage.failed(what, error)

    def drives(self, run_id: str) -> bool:
        """Whether this worker is driving the run right now."""
        return run_id in self._runners

    @property
    def in_flight(self) -> int:
        """Runs being driven now."""
        return len(self._runners)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Take back this worker id's unfinished runs, then start claiming and heartbeating.

        The reclaim finishes before start() returns, so it can never grab a run that start()
        of the engine hands to this worker directly afterwards. First the worker lists itself
        with the (type, version) pairs it drives (see :mod:`.presence`).
        """
        await self._presence.start()
        await self._claim_round(self.concurrency, reclaim_own=True)
        self._loop_task = asyncio.create_task(self._claim_loop(), name="saga-claims")
        self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name="saga-heartbeat")
        self._attention_task = asyncio.create_task(self._attention_loop(), name="saga-attention")

    async def stop(self, grace: timedelta) -> None:
        """Stop claiming; let attempts in flight finish within ``grace``; hand runs back."""
        self._stopping = True
        self._wakeup.set()
        for timer in self._timers:
            timer.cancel()
        for task in (self._loop_task, self._attention_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        held = list(self._runners)
        for runner, _task in self._runners.values():
            runner.stop_after_step()
        tasks = [task for _runner, task in self._runners.values()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace.total_seconds())
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        handback = [
            run_id for run_id in held if run_id in self._handback or run_id in self._runners
        ]
        if handback:
            try:
                count = await self._store.release(self.worker_id, handback, self._clock.now())
                log.info("handed %d runs back at shutdown", count)
            except Exception:
                log.exception(
                    "could not hand runs back; they will be taken over when their leases expire"
                )
        await self._presence.stop()

    # -- claiming -----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            room = self.concurrency - len(self._runners) - self._reserved
            self._backlog = room <= 0
            claimed = await self._claim_round(room, reclaim_own=False) if room > 0 else 0
            if claimed is None:
                # Waiting for the database to come back: nothing to wait on but time.
                await timers.sleep(self._clock, self._claim_backoff.next())
                continue
            if room > 0 and claimed == room:
                self._backlog = True
                continue  # there may be more due work than the room we had
            await self._sleep(room > 0)

    async def _claim_round(self, room: int, *, reclaim_own: bool) -> int | None:
        """Claim and spawn up to ``room`` runs; None if the claim failed."""
        now = self._clock.now()
        lost = list(self._lost_claims)
        try:
            request = ClaimRequest(
                self.worker_id,
                room,
                self._types,
                now,
                reclaim_own,
                exclude=list(self._runners),
                takeover_before=self.outage.takeover_before(now, self._store.lease),
                lost_claims=lost,
            )
            claimed = await self._store.claim(request)
        except DatabaseUnavailableError as error:
            self._claim_lost(now)
            self.outage.failed("claims", error)
            return None
        except Exception:
            log.exception("claiming runs failed; retrying with backoff")
            return None
        self._claim_backoff.reset()
        self.outage.ok()
        if lost and len(claimed) < room:
            # Every run those claims took (if any) is ours again now.
            self._lost_claims = [at for at in self._lost_claims if at not in lost]
        self.alive_at = self._clock.now()
        for item in claimed:
            if item.previous_owner is not None:
                self._metrics.takeovers.labels(item.run.saga_type).inc()
                log.info(
                    "took over run from %s",
                    item.previous_owner,
                    extra={"saga_id": item.run.id, "step": item.run.current_step},
                )
            self._spawn(item.run)
        return len(claimed)

    async def _sleep(self, has_room: bool) -> None:
        timeout = self._poll
        if has_room:
            with contextlib.suppress(Exception):
                due = await self._store.next_due(self._types)
                if due is not None:
                    timeout = min(timeout, max((due - self._clock.now()).total_seconds(), 0))
        if timeout <= 0:
            return
        await timers.wait_event(self._clock, self._wakeup, timeout)

    def _wake_at(self, at: datetime | None) -> None:
        if at is None or self._stopping:
            return
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(self._clock.call_at(at, self._wakeup.set))

    # -- driving ------------------------------------------------------------------------

    def _spawn(self, run: SagaRun, first: PendingInsert | None = None) -> None:
        stale = self._runners.get(run.id)
        if stale is not None:
            # Our own lease expired under a stalled runner and we claimed it again: the epoch
            # bump already fences the old runner; stop it.
            stale[1].cancel()
        # Driven with the definition of the version it is pinned to (claims ask for no other).
        saga = self._sagas[(run.saga_type, run.saga_version)]
        state = state_of(run, saga)
        state.worker = self.worker_id
        runner = Runner(
            saga,
            state,
            self._store,
            clock=self._clock,
            metrics=self._metrics,
            hooks=self._hooks,
            rand=self._rand,
            on_commit=self._on_commit,
            outage=self.outage,
            tracer=self._tracer,
            carry_plain_steps=self._carry,
            first=first,
        )
        task = asyncio.create_task(self._drive(runner), name=f"saga-{run.id}")
        self._runners[run.id] = (runner, task)
        self._metrics.in_flight_of(run.saga_type).inc()

    async def _drive(self, runner: Runner) -> None:
        last: Progress | None = None
        try:
            last = await runner.run()
        except asyncio.CancelledError:
            pass
        except Exception:  # pragma: no cover - runner.run handles its own errors
            log.exception("runner crashed", extra={"saga_id": runner.run_id})
        finally:
            entry = self._runners.get(runner.run_id)
            if entry is not None and entry[0] is runner:
                del self._runners[runner.run_id]
            self._metrics.in_flight_of(runner.saga.name).dec()
            if last is not None and last.keep_lease:
                self._handback.add(runner.run_id)
            if last is None or not last.keep_lease:
                self._handback.discard(runner.run_id)
            if last is not None and not last.keep_lease and not last.finished:
                self._wake_at(last.next_run_at)
            if last is not None and last.status is SagaStatus.FAILED:
                self._attention_due.set()
            if self._backlog:
                self._wakeup.set()  # a slot freed up while due work was waiting

    # -- the attention gauge ------------------------------------------------------------

    async def _attention_loop(self) -> None:
        """Keep ``saga_needs_attention`` current: one grouped count per round."""
        while True:
            self._attention_due.clear()
            try:
                self._metrics.set_needs_attention(await self._store.count_needs_attention())
            except Exception as error:
                # The gauge keeps its last value; claims and renewals report outages.
                log.debug("counting the runs that need attention failed: %s", error)
            await timers.wait_event(
                self._clock, self._attention_due, ATTENTION_INTERVAL.total_seconds()
            )

    # -- leases -------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self._store.lease.total_seconds() / 3
        # After a failure, renew again soon: a lease must be renewed before it runs out.
        backoff = Backoff(min(CLAIM_BACKOFF[0], interval), min(CLAIM_BACKOFF[1], interval))
        delay = interval
        while True:
            await timers.sleep(self._clock, delay)
            # A run whose insert waits for its first step is not in the store yet.
            ids = [i for i, (runner, _task) in self._runners.items() if not runner.unwritten]
            try:
                held = await self._store.heartbeat(self.worker_id, ids)
            except Exception as error:
                # Never stop runners for a failed renewal: the lease may well still be ours.
                if isinstance(error, DatabaseUnavailableError):
                    self.outage.failed("lease renewal", error)
                else:
                    log.exception("lease renewal failed; retrying with backoff")
                delay = backoff.next()
                continue
            backoff.reset()
            delay = interval
            if ids:  # with nothing to renew, the store did not ask the database
                self.outage.ok()
            self.alive_at = self._clock.now()
            for run_id in ids:
                entry = self._runners.get(run_id)
                if entry is None:
                    continue
                runner, task = entry
                lease = held.get(run_id)
                if lease is None or lease[0] != runner.state.epoch:
                    if runner.state.status.is_active:
                        log.warning("lease lost; stopping the run here", extra={"saga_id": run_id})
                        task.cancel()
                elif lease[1]:
                    runner.request_cancel()
