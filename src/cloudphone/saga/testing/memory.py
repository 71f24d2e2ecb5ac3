"""MemoryEngine: the SagaEngine interface on an in-memory store, moved by a ManualClock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import timedelta

from prometheus_client import CollectorRegistry

from cloudphone.saga.context import StepContext
from cloudphone.saga.definition import Saga
from cloudphone.saga.engine import SagaEngine
from cloudphone.saga.errors import SagaDefinitionError
from cloudphone.saga.inputs import seconds
from cloudphone.saga.ports import Clock
from cloudphone.saga.store.database import Database
from cloudphone.saga.store.memory import MemoryStore
from cloudphone.saga.testing.clock import ManualClock
from cloudphone.saga.testing.faults import Boundary, FaultInjector
from cloudphone.saga.worker import Worker


class WorkerCrashed(asyncio.CancelledError):
    """A simulated worker death (see :meth:`MemoryEngine.crash_at`); never reaches a step.

    A cancellation, so that neither the engine nor a step's ``except Exception`` treats it as
    a failed attempt: the attempt is lost, as it is when a process dies.
    """


_QUIET_TURNS = 5

_AFTER = timedelta(microseconds=1)
"""A lease is over once the clock is strictly past its end."""


def _full_backoff() -> float:
    return 1.0


class MemoryEngine(SagaEngine):
    """The :class:`~cloudphone.saga.SagaEngine` interface with no engine database.

    Runs, leases and history live in a :class:`~cloudphone.saga.store.memory.MemoryStore`
    with the SQL store's semantics (one contract suite covers both). Every wait of the engine
    is measured on ``clock``, by default a :class:`ManualClock`: retries, deadlines, step
    timeouts and lease expiries happen when the test moves it (:meth:`advance`), never by
    themselves. Operator actions (retry, cancel, resolve, migrate, fork) work as on SQL.

    Example::

        engine = MemoryEngine([refund], database=business_db)
        engine.faults.fail("CALL_PROVIDER_REFUND", times=None)
        async with engine.worker():
            saga_id = await engine.start("payment_refund", {"refund_id": "r1"})
            await engine.advance(timedelta(minutes=1))   # the retries come due
            run = await engine.get(saga_id)

    Args:
        sagas: The saga definitions.
        clock: Time source; a fresh :class:`ManualClock` by default.
        database: Business database: transactional steps write through its transactions
            (``ctx.session``) and it is ``engine.db`` for services that keep their tables in
            the engine's database. Required when a saga has a transactional step.
        faults: Fault injection hooks (``engine.faults``); a fresh injector by default.
        worker_id: Id of the engine's worker.
        lease: Lease length; a crashed worker's runs are taken over once the clock passes it.
        poll_interval: How often (on ``clock``) the idle worker looks for work it was not
            told about; it is woken for new, due and taken-over runs anyway.
        registry: Prometheus registry of the engine's metrics.
        rand: Jitter source for retry delays. The default (1.0) makes every retry wait its full
            backoff, so moving the clock by that much is sure to fire it.
    """

    def __init__(
        self,
        sagas: Iterable[Saga] = (),
        *,
        clock: Clock | None = None,
        database: Database | None = None,
        faults: FaultInjector | None = None,
        worker_id: str = "memory-worker",
        lease: timedelta = timedelta(seconds=30),
        poll_interval: timedelta = timedelta(minutes=1),
        registry: CollectorRegistry | None = None,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.memory = MemoryStore(clock if clock is not None else ManualClock(), lease, database)
        self.faults = faults if faults is not None else FaultInjector()
        super().__init__(
            sagas=sagas,
            store=self.memory,
            worker_id=worker_id,
            hooks=self.faults,
            poll_interval=poll_interval,
            registry=registry,
            rand=rand or _full_backoff,
        )
        if database is None:
            _refuse_transactional(self.registry.values())
        self._crashes = 0

    @asynccontextmanager
    async def worker(
        self, concurrency: int = 64, *, grace: timedelta = timedelta(0)
    ) -> AsyncIterator[Worker]:
        """Run the worker while the block runs; on exit attempts in flight are cancelled.

        ``grace`` is wall time, as for the SQL engine: give one to let attempts finish.
        """
        async with super().worker(concurrency, grace=grace) as worker:
            yield worker

    # -- crashes ------------------------------------------------------------------------

    def crash_at(
        self,
        step: str,
        when: Boundary = "before",
        *,
        compensating: bool = False,
        saga: str | None = None,
        attempt: int | None = None,
        times: int | None = 1,
    ) -> None:
        """Simulate the worker driving a run dying at a boundary of ``step``.

        ``before``: as the attempt starts, before the action runs. ``after``: once the action
        returned, before its progress is committed (a transactional step's writes roll
        back; any other step's outside effect has happened). Either way nothing is committed
        and the run stays leased by the dead worker (``<worker_id>/crashed-<n>``). Once the
        clock passes that lease (``await engine.advance(engine.lease + timedelta(seconds=1))``)
        the engine's worker takes it over, as another worker would: a ``lease_takeover`` event,
        and the step runs again with the next attempt number and the same idempotency key
        (a transactional step whose commit would also have written the plain step before it
        loses that step's success too: that step runs again first, see docs/engine.md, "A
        plain step's success rides with the next transaction"). Other runs are not affected.
        """
        self.faults.add(
            step,
            self._crash,
            when=when,
            times=times,
            compensating=compensating,
            saga=saga,
            attempt=attempt,
        )

    def _crash(self, ctx: StepContext) -> None:
        self._crashes += 1
        expires = self.memory.abandon(ctx.saga_id, f"{self.worker_id}/crashed-{self._crashes}")
        if expires is not None:
            # Another process would notice on its next poll; wake ours just after the expiry.
            self.clock.call_at(expires + _AFTER, self._wake_worker)
        raise WorkerCrashed(f"simulated worker crash in {ctx.step} of {ctx.saga_id}")

    def _wake_worker(self) -> None:
        if self._worker is not None:
            self._worker.wake()

    # -- time ---------------------------------------------------------------------------

    async def advance(self, delta: timedelta) -> None:
        """Let ``delta`` of clock time pass, doing each timer's work at its own time.

        The engine first settles; then the clock moves from one timer to the next (retries
        coming due, step timeouts, the deadline, lease expiries, polls), settling at each, so
        a step that fails every second fails at 1 s, 3 s, 7 s… as it would in real time.

        Raises:
            TypeError: The engine's clock is not a :class:`ManualClock`.
        """
        clock = self.clock
        if not isinstance(clock, ManualClock):
            raise TypeError(f"advance() needs a ManualClock; this engine runs on {clock!r}")
        await self.settle()
        target = clock.now() + delta
        while (at := clock.next_timer()) is not None and at <= target:
            clock.advance(at - clock.now())
            await self.settle()
        clock.advance(target - clock.now())
        await self.settle()

    async def settle(
        self,
        timeout: timedelta = timedelta(seconds=10),  # noqa: ASYNC109 - a wall-time bound
    ) -> None:
        """Wait until the worker can do nothing more without the clock moving.

        That is: no attempt in flight (but those blocked by ``faults.hang``, which wait for the
        clock to cut them short) and no run it could claim now. Runs waiting for a retry, a
        lease or a deadline stay where they are until the clock passes their time.

        Raises:
            RuntimeError: No worker runs (``async with engine.worker(): ...``).
            TimeoutError: Still busy after ``timeout`` of wall time, e.g. an attempt that
                waits for its step timeout or the deadline: advance the clock instead.
        """
        worker = self._worker
        if worker is None:
            raise RuntimeError("settle() needs a running worker: async with engine.worker()")
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds(timeout, "timeout")
        quiet = 0
        # Idle for a few loop turns in a row: a timer the clock just fired has had the turns
        # it takes to cancel an attempt and for that attempt to get going again.
        while quiet < _QUIET_TURNS:
            await asyncio.sleep(0)
            busy = self._busy(worker)
            if not busy:
                quiet += 1
                continue
            quiet = 0
            if loop.time() >= until:
                raise TimeoutError(
                    f"the engine is still busy after {timeout} ({busy} runs in flight); an "
                    "attempt waiting for its step timeout or the deadline needs the clock moved"
                )
            await asyncio.sleep(0.001)

    def _busy(self, worker: Worker) -> int:
        """Runs the worker drives or could claim now; attempts parked by ``hang`` excepted."""
        parked = sum(1 for run_id in self.faults.hanging if worker.drives(run_id))
        running = worker.in_flight - parked
        return running or int(self.memory.claimable(list(self.registry), self.clock.now(), ()))


def _refuse_transactional(sagas: Iterable[Saga]) -> None:
    needy = [
        f"{saga.name}.{step.name}"
        for saga in sagas
        for step in saga.steps
        if step.transactional or (step.compensation is not None and step.compensation_transactional)
    ]
    if needy:
        raise SagaDefinitionError(
            f"transactional steps need a database for ctx.session: {', '.join(needy)}; "
            "pass MemoryEngine(database=...) (a SQLite file with your tables will do)"
        )
