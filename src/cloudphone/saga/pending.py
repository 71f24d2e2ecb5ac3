"""A start whose insert goes with the run's first step: one round trip for both.

A run started in a process whose worker has room is claimed by its insert and driven here at
once (see :meth:`.SagaEngine.start_run`). When its first step is transactional, nothing that
step does outlives its transaction: it has no effect outside the database, and its writes
commit if and only if its progress record does. So the insert may wait for that commit and
be part of it: the run's row, its ``saga_started`` event, the step's business writes and its
progress, in one transaction (one statement on PostgreSQL, see :mod:`.store.first_insert`).
Until it commits the run does not exist anywhere, and ``start()`` has not returned; if the
process dies meanwhile, nothing of it was written, as when it dies before an insert.

The insert is sent by itself first (:meth:`PendingInsert.flush`) whenever anything else is
about to happen: a plain step, a compensation, the record of a failed attempt, a decision;
and by ``start()`` when the step takes longer than :data:`BUDGET`, so that a slow first step
never holds up the caller. Only starts without an idempotency key and without ``session=``
are deferred (those must know at once whether the run exists), and only for a run alone (the
worker drives no other) while the store says it is the cheaper way
(:meth:`.SagaStore.first_step_inserts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

from cloudphone.saga.errors import DatabaseUnavailableError, LeaseLostError
from cloudphone.saga.store.base import FirstStepInserts, NewRun, SagaStore

if TYPE_CHECKING:
    from cloudphone.saga.outage import PatientStore

BUDGET = 0.05
"""Seconds ``start()`` waits for the first step before sending the insert by itself."""


class _State(enum.Enum):
    WAITING = "waiting"
    """Not written; the first step's commit may take it."""
    TAKEN = "taken"
    """The first step's commit is writing it."""
    FLUSHING = "flushing"
    """Being inserted by itself, or read back (whoever comes next waits)."""
    MAYBE = "maybe"
    """An insert (or the commit that took it) lost its answer: read the run back to know."""
    INSERTED = "inserted"
    GIVEN_BACK = "given_back"
    """The runner stopped before writing it: ``start()`` inserts it unclaimed."""


class PendingInsert:
    """The insert of a run claimed by its insert, waiting for its first step's commit.

    The runner takes it for that commit (:meth:`take`) or sends it by itself first
    (:meth:`flush`), waiting out outages as for every runner write; ``start()`` waits for it
    (:meth:`started`). An insert whose answer is lost is read back before anything else: the
    run's id is new, so finding the run means it landed.

    Args:
        new: The run to insert (claimed: ``owner`` is this worker).
        store: How the first step's transaction inserts it.
        runs: The engine's store (its ``insert_run`` and ``get``).
        on_written: Called once when the run is known to exist (the start's metric).
    """

    def __init__(
        self,
        new: NewRun,
        store: FirstStepInserts,
        runs: SagaStore,
        on_written: Callable[[], None] = lambda: None,
    ) -> None:
        self.new = new
        self.store = store
        self._runs = runs
        self._on_written = on_written
        self._patient: PatientStore | None = None
        self._state = _State.WAITING
        self._changed = asyncio.Event()
        self._outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def bind(self, patient: PatientStore) -> None:
        """The runner's patient store: its reads wait out outages."""
        self._patient = patient

    @property
    def written(self) -> bool:
        """Whether the run is known to exist in the store."""
        return self._state is _State.INSERTED

    # -- the runner's side ----------------------------------------------------------------

    async def take(self) -> NewRun | None:
        """The run, for the first step's commit to insert; None once it exists.

        Called by that commit. An insert in flight is waited for, one whose answer was lost
        is read back first.

        Raises:
            LeaseLostError: The run was given back (the runner stopped).
        """
        while True:
            state = self._state
            if state is _State.WAITING:
                self._set(_State.TAKEN)
                return self.new
            if state is _State.INSERTED:
                return None
            if state is _State.GIVEN_BACK:
                raise self._given_back()
            if state is _State.MAYBE:
                await self._read_back(patient=True)
            else:
                await self._wait_change()

    def untake(self) -> None:
        """The commit that took it did not land (or may not have): it waits again."""
        if self._state in (_State.TAKEN, _State.MAYBE):
            self._set(_State.WAITING)

    def committed(self) -> None:
        """The commit that took it landed: the run exists."""
        if self._state in (_State.TAKEN, _State.MAYBE):
            self._inserted()

    def answer_lost(self, error: BaseException) -> None:
        """The commit that took it lost its answer: ``start()`` raises ``error`` (it may exist).

        The runner goes on asking whether it landed (:meth:`committed`, :meth:`untake`).
        """
        if self._state is _State.TAKEN:
            self._set(_State.MAYBE)
            self._fail_start(error)

    async def flush(self) -> None:
        """Make sure the run exists: insert it by itself now unless it does (or is being).

        Waits out outages. Raises LeaseLostError if the run was given back.
        """
        while True:
            state = self._state
            if state is _State.INSERTED:
                return
            if state is _State.GIVEN_BACK:
                raise self._given_back()
            if state is _State.WAITING:
                await self._insert_or_raise(patient=True)
            elif state is _State.MAYBE:
                await self._read_back(patient=True)
            else:
                await self._wait_change()

    def give_back(self) -> None:
        """The runner stopped before the run was written: ``start()`` inserts it unclaimed.

        Also when its commit was in flight (a cancelled runner): ``start()``'s insert then
        finds the run if that commit landed.
        """
        if self._state in (_State.WAITING, _State.TAKEN):
            self._set(_State.GIVEN_BACK)
            if not self._outcome.done():
                self._outcome.set_result(False)

    # -- start()'s side ---------------------------------------------------------------------

    async def started(self, budget: float | None = None) -> bool:
        """Wait until the run is written: True, or False if it was given back.

        Past ``budget`` seconds (default :data:`BUDGET`, read when called) the insert is sent
        by itself, once (the first step goes on). The budget is wall time, not the engine's
        clock: it bounds how long the caller waits, and a test's hand-moved clock must not
        keep ``start()`` waiting for a step that waits for the test. A commit that took the
        insert is waited for (a lock it waits on holds ``start()`` up too).

        Raises:
            DatabaseUnavailableError: The insert (or the commit carrying it) lost its answer
                or failed with the database: the run may exist (the runner goes on).
        """
        try:
            async with asyncio.timeout(BUDGET if budget is None else budget):
                return await asyncio.shield(self._outcome)
        except TimeoutError:
            pass
        while not self._outcome.done():
            if self._state is _State.WAITING:
                await self._insert_or_raise(patient=False)
            elif self._state is _State.MAYBE:
                await self._read_back(patient=False)
            else:
                await self._wait_change()
        return self._outcome.result()

    # -- both ---------------------------------------------------------------------------------

    async def _insert_or_raise(self, *, patient: bool) -> None:
        """Insert it by itself once.

        After an outage the runner waits a while (``patient``); after another error the run
        is read back, and if it is not there the error is raised (and ``start()`` raises
        it): the insert was refused.
        """
        error = await self._insert_once()
        if error is None:
            return
        if isinstance(error, DatabaseUnavailableError):
            if patient and self._patient is not None:
                await self._patient.pause("start", error)
            return
        await self._read_back(patient=patient)
        if not self.written:  # not there: refused (or unknown, with start() told)
            self._fail_start(error)
            raise error

    async def _insert_once(self) -> BaseException | None:
        """Send the insert by itself: None, or why it failed (the state is MAYBE then).

        Its end settles the state (INSERTED, or MAYBE) even if this waiter is cancelled
        meanwhile: the insert runs on to its end.
        """
        self._set(_State.FLUSHING)
        task = asyncio.ensure_future(self._runs.insert_run(self.new))
        task.add_done_callback(self._insert_done)
        with contextlib.suppress(Exception):  # the callback records it
            await asyncio.shield(task)
        return _failure(task)

    def _insert_done(self, task: asyncio.Future[tuple[str, bool]]) -> None:
        error = _failure(task)
        if error is None:
            self._inserted()
            return
        self._set(_State.MAYBE)
        if isinstance(error, DatabaseUnavailableError):
            self._fail_start(error)

    async def _read_back(self, *, patient: bool) -> None:
        """After a lost answer: the run exists (it landed) or not (insert it again)."""
        self._set(_State.FLUSHING)
        try:
            if patient and self._patient is not None:
                run = await self._patient.get(self.new.id)
            else:
                run = await self._runs.get(self.new.id)
        except BaseException as error:
            self._set(_State.MAYBE)
            if isinstance(error, DatabaseUnavailableError):
                self._fail_start(error)
                return
            raise
        if run is not None:
            self._inserted()
        else:
            self._set(_State.WAITING)

    def _fail_start(self, error: BaseException) -> None:
        if not self._outcome.done():
            self._outcome.set_exception(error)
            self._outcome.exception()  # retrieved: start() may have stopped waiting

    def _inserted(self) -> None:
        first = self._state is not _State.INSERTED
        self._set(_State.INSERTED)
        if not self._outcome.done():
            self._outcome.set_result(True)
        if first:
            self._on_written()

    def _given_back(self) -> LeaseLostError:
        return LeaseLostError(f"run {self.new.id} was handed back before it was written")

    def _set(self, state: _State) -> None:
        self._state = state
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self) -> None:
        await self._changed.wait()


def _failure(task: asyncio.Future[tuple[str, bool]]) -> BaseException | None:
    """Why a finished insert failed (None: it did not)."""
    return asyncio.CancelledError() if task.cancelled() else task.exception()


async def insert_given_back(store: SagaStore, new: NewRun, *, notify: bool) -> None:
    """Insert a run its runner gave back before writing it, for any worker to claim.

    Its first step's commit may have been in flight when the runner stopped: if that landed,
    the run exists already (claimed by this worker, whose lease on it runs out).
    """
    try:
        await store.insert_run(dataclasses.replace(new, owner=None), None, notify=notify)
    except Exception:
        if await store.get(new.id) is None:
            raise
