"""SagaEngine: the facade users code against (start, worker, wait, read, operate)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import timedelta

from prometheus_client import CollectorRegistry
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudphone.saga.definition import Saga
from cloudphone.saga.engine_actions import OperatorActions
from cloudphone.saga.engine_reads import RunReads
from cloudphone.saga.engine_starts import RunStarts
from cloudphone.saga.errors import NestedWriteError
from cloudphone.saga.inputs import seconds
from cloudphone.saga.metrics import SagaMetrics
from cloudphone.saga.ports import Clock, StepHooks
from cloudphone.saga.progress import OperatorChange, Progress, RunState, finished_run
from cloudphone.saga.records import SagaRun
from cloudphone.saga.registry import SagaRegistry
from cloudphone.saga.store.base import NewRun, SagaStore, Subscription
from cloudphone.saga.store.choose import choose_store
from cloudphone.saga.store.database import Database
from cloudphone.saga.store.sql import SqlStore
from cloudphone.saga.tracing import NO_TRACER, SagaTracer
from cloudphone.saga.worker import Worker


def default_worker_id() -> str:
    """``host-pid``: unique per process. Pass a stable id to reclaim runs after a restart."""
    return f"{socket.gethostname()}-{os.getpid()}"


class SagaEngine(RunStarts, RunReads, OperatorActions):
    """Starts, drives and inspects sagas stored in one database (or another store).

    Args:
        database: URL (``postgresql+asyncpg://…``, ``postgresql+psycopg://…``,
            ``sqlite+aiosqlite:///…``), an AsyncEngine, or a Database to share. Omit it when
            passing ``store``.
        sagas: The saga definitions this engine knows (and its worker runs); several
            versions of one name may be given (``Saga(name, version=N)``), each (name,
            version) once.
        store: A :class:`~cloudphone.saga.store.base.SagaStore` to use instead of the SQL
            store built on ``database`` (the test kit's in-memory store, say). Its lease and
            clock are the engine's; the caller closes it.
        worker_id: Identity of this process's worker; a worker restarting with the same id
            takes its unfinished runs back at once. Default: ``host-pid``.
        lease: How long a claim holds a run without renewal; a crashed worker's runs are taken
            over after it expires. Default 30 s (with ``store``: the store's).
        clock: Time source (see :class:`cloudphone.saga.testing.ManualClock`); with
            ``store``: the store's.
        registry: Prometheus registry for the engine's metrics (a private one by default).
        hooks: Called around each attempt (fault injection in tests).
        poll_interval: Longest an idle worker waits before looking for due runs again.
        rand: Uniform random source for retry jitter.
        tracer: Opens spans around starts, drives, attempts and compensations (none by
            default; :class:`cloudphone.saga.otel.OpenTelemetryTracer` for OpenTelemetry).
        step_group: On PostgreSQL, most transactional steps of different runs that may share
            one transaction (default 32; 1: each its own; see
            :mod:`cloudphone.saga.store.step_group`).
        carry_plain_steps: A plain step's success followed at once by a transactional step
            is written in that step's transaction instead of a write of its own (default;
            see docs/engine.md, "A plain step's success rides with the next transaction").
        insert_with_first_step: A run started alone (the worker drives no other, nothing
            else of the process is being written) whose first step is transactional and
            that has no idempotency key is inserted with that step's commit
            (one round trip for both; ``start()`` returns once it committed, or after
            :data:`~cloudphone.saga.pending.BUDGET` with the run inserted by itself; see
            :mod:`cloudphone.saga.pending`). False: every run is inserted before it runs.
    """

    def __init__(
        self,
        database: str | URL | AsyncEngine | Database | None = None,
        sagas: Iterable[Saga] = (),
        *,
        store: SagaStore | None = None,
        worker_id: str | None = None,
        lease: timedelta | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        hooks: StepHooks | None = None,
        poll_interval: timedelta = timedelta(seconds=1),
        rand: Callable[[], float] | None = None,
        tracer: SagaTracer = NO_TRACER,
        step_group: int | None = None,
        carry_plain_steps: bool = True,
        insert_with_first_step: bool = True,
    ) -> None:
        self.store, self._owned = choose_store(database, store, lease, clock, step_group)
        self.registry = SagaRegistry(sagas)
        """Every registered definition by ``(name, version)``."""
        self.sagas: dict[str, Saga] = self.registry.latest
        """The newest registered version of each saga type, by name (what starts take)."""
        if self.store.lease < timedelta(milliseconds=300):
            raise ValueError(
                f"lease {self.store.lease} is too short to renew reliably (minimum 300 ms)"
            )
        self.worker_id = worker_id or default_worker_id()
        self.lease = self.store.lease
        self.clock: Clock = self.store.clock
        self.metrics = SagaMetrics(registry)
        if isinstance(self.store, SqlStore) and self.store.step_groups is not None:
            self.store.step_groups.watch = self.metrics
        self._hooks = hooks
        self._poll = poll_interval
        self._rand = rand
        self._tracer = tracer
        self.carry_plain_steps = carry_plain_steps
        """Whether a plain step's success rides with the next transactional step's commit."""
        self.insert_with_first_step = insert_with_first_step
        """Whether a lone start's insert may go with its first (transactional) step's commit."""
        self._worker: Worker | None = None
        self._listener: Subscription | None = None
        self._waiters: dict[str, asyncio.Future[SagaRun | None]] = {}

    @property
    def db(self) -> Database:
        """The database of the engine's runs and of the services' tables that join them.

        Raises:
            RuntimeError: The engine's store has none (an in-memory engine built without a
                business database).
        """
        db = self.store.db
        if db is None:
            raise RuntimeError(
                "this engine's store has no database; give the in-memory engine one "
                "(MemoryEngine(database=...)) for transactional steps and services' tables"
            )
        return db

    # -- schema -------------------------------------------------------------------------

    async def create_schema(self) -> None:
        """Create the engine's tables if missing (production uses the Alembic migrations)."""
        await self.store.create_schema()

    # -- starting (start, start_run: engine_starts), and writes a step may not make -----

    def _refuse_nested_write(self, what: str, instead: str) -> None:
        """Refuse an engine write (or wait) inside a write transaction of its SQLite database.

        SQLite has one writer, and that transaction (a transactional step's) holds it until
        it commits: what needs a write of its own would wait for it forever (see
        :meth:`Database.writing`). PostgreSQL and a store without a database never refuse.
        """
        db = self.store.db
        if db is not None and db.writing():
            raise NestedWriteError(
                f"{what} inside a write transaction of this engine's SQLite database (a "
                f"transactional step?) would wait for that transaction forever: {instead}"
            )

    # -- workers ------------------------------------------------------------------------

    @asynccontextmanager
    async def worker(
        self, concurrency: int = 64, *, grace: timedelta = timedelta(seconds=30)
    ) -> AsyncIterator[Worker]:
        """Run a worker while the block runs; on exit stop gracefully (see Worker.stop)."""
        if self._worker is not None:
            raise RuntimeError("this engine already runs a worker")
        worker = Worker(
            store=self.store,
            sagas=self.registry,
            worker_id=self.worker_id,
            concurrency=concurrency,
            clock=self.clock,
            metrics=self.metrics,
            hooks=self._hooks,
            poll_interval=self._poll,
            on_commit=self._committed,
            tracer=self._tracer,
            carry_plain_steps=self.carry_plain_steps,
            **({"rand": self._rand} if self._rand else {}),
        )
        await worker.start()
        self._worker = worker
        self._listener = self.store.subscribe(
            self._notified,
            # Runs announced while it was disconnected were not heard: look for them.
            on_connect=worker.wake,
            on_lost=lambda error: worker.database_lost("announcements", error),
        )
        if self._listener is not None:
            self._listener.start()
        try:
            yield worker
        finally:
            if self._listener is not None:
                await self._listener.stop()
                self._listener = None
            await worker.stop(grace)
            self._worker = None

    async def run_worker(
        self, concurrency: int = 64, *, grace: timedelta = timedelta(seconds=30)
    ) -> None:
        """Run a worker until cancelled, then stop gracefully."""
        async with self.worker(concurrency, grace=grace):
            await asyncio.Event().wait()

    def _notified(self, saga_type: str) -> None:
        if self._worker is not None and saga_type in self.sagas:
            self._worker.wake()

    def _committed(self, state: RunState, progress: Progress) -> None:
        if not progress.keep_lease and state.id in self._waiters:
            self._resolve_waiters(state.id, finished_run(state, progress))

    def _resolve_waiters(self, run_id: str, run: SagaRun | None = None) -> None:
        """Wake the waiters of ``run_id``, handing them ``run`` when it is the final state."""
        future = self._waiters.pop(run_id, None)
        if future is not None and not future.done():
            future.set_result(run)

    # -- waiting ------------------------------------------------------------------------

    async def wait(
        self,
        saga_id: str,
        timeout: timedelta = timedelta(seconds=30),  # noqa: ASYNC109 - this API's contract
    ) -> SagaRun:
        """Wait until the run is terminal (FAILED included) and return it.

        Args:
            saga_id: The run.
            timeout: Longest wait (wall time).

        Raises:
            TimeoutError: Still active after ``timeout``.
            NestedWriteError: The run is not terminal, and this task is inside a write
                transaction of the engine's SQLite database (a transactional step): the
                run cannot move until that transaction commits.
        """
        limit = seconds(timeout, "timeout")
        if (db := self.store.db) is not None and db.writing():
            run = await self.get(saga_id)
            if run.status.is_terminal:
                return run
            self._refuse_nested_write(f"wait() for saga {saga_id}", "wait after the step")
        loop = asyncio.get_running_loop()
        until = loop.time() + limit
        delay = 0.005
        while True:
            future = self._waiters.get(saga_id)
            if future is None or future.done():
                future = self._waiters[saga_id] = loop.create_future()
            worker = self._worker
            if worker is None or not worker.drives(saga_id):
                run = await self.get(saga_id)
                if run.status.is_terminal:
                    return run
                status = run.status.value
            else:
                status = "driven by this worker"
            remaining = until - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"saga {saga_id} is still {status} after {timeout}")
            # This worker resolves the future whenever it lets go of the run (finished, with
            # the run as its last write stored it; or waiting for a retry); runs driven
            # elsewhere are polled with a growing delay.
            local = worker is not None and worker.drives(saga_id)
            finished: SagaRun | None = None
            with contextlib.suppress(TimeoutError):
                finished = await asyncio.wait_for(
                    asyncio.shield(future), min(1.0 if local else delay, remaining)
                )
            if finished is not None and finished.status.is_terminal:
                return finished
            delay = min(delay * 2, 0.25)

    # -- operator actions (retry, cancel, resolve, migrate, fork: engine_actions) ---------

    async def _operate(
        self,
        saga_id: str,
        decide: Callable[[SagaRun], OperatorChange],
        spawn: NewRun | None = None,
    ) -> SagaRun:
        """Apply an operator decision (and insert ``spawn``, a fork, with it); wake workers."""
        self._refuse_nested_write("an operator action", "act from a plain step, or after it")
        run = await self.store.operate(saga_id, decide, notify=self.store.announces, spawn=spawn)
        if run.status.is_terminal:
            self._resolve_waiters(run.id, run)
        if self._worker is not None:
            self._worker.wake()
            self._worker.refresh_attention()
        return run

    async def close(self) -> None:
        """Release database connections (stop workers first)."""
        owned_store, owned_db = self._owned
        if owned_store:
            await self.store.close()
        if owned_db is not None:
            await owned_db.dispose()
