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
from collections.abc import Awaitable, Callable

from cloudphone.saga.errors import LeaseLostError
from cloudphone.saga.store.base import FirstStepInserts, NewRun, SagaStore

BUDGET = 0.05
"""Seconds ``start()`` waits for the first step before sending the insert by itself."""


class _State(enum.Enum):
    WAITING = "waiting"
    """Not written; the first step may still take it."""
    TAKEN = "taken"
    """The first step's commit is writing it."""
    FLUSHING = "flushing"
    """Being inserted by itself."""
    INSERTED = "inserted"
    UNKNOWN = "unknown"
    """Its insert failed with the database: it may exist (``start()`` raised)."""
    GIVEN_BACK = "given_back"
    """The runner stopped before writing it: ``start()`` inserts it unclaimed."""


class PendingInsert:
    """The insert of a run claimed by its insert, waiting for its first step's commit.

    Args:
        new: The run to insert (claimed: ``owner`` is this worker).
        store: How the first step's transaction inserts it.
        insert: Sends the insert by itself (the store's ``insert_run``).
    """

    def __init__(
        self,
        new: NewRun,
        store: FirstStepInserts,
        insert: Callable[[NewRun], Awaitable[object]],
    ) -> None:
        self.new = new
        self.store = store
        self._insert = insert
        self._state = _State.WAITING
        self._changed = asyncio.Event()
        self._outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    @property
    def waiting(self) -> bool:
        """Whether the run is not written yet and nothing is writing it."""
        return self._state is _State.WAITING

    @property
    def written(self) -> bool:
        """Whether the run exists in the store."""
        return self._state is _State.INSERTED

    async def take(self) -> NewRun | None:
        """The run, for the first step's commit to insert; None once it was inserted.

        Called by that commit (a budget's insert in flight is waited for first).

        Raises:
            LeaseLostError: Its insert failed with the database (``start()`` raised): the
                run may exist, and is not this runner's to drive on.
        """
        while self._state is _State.FLUSHING:
            await self._wait_change()
        if self._state is _State.WAITING:
            self._set(_State.TAKEN)
            return self.new
        self._refuse_unknown()
        return None

    def untake(self) -> None:
        """The commit that took it did not land: it waits again."""
        if self._state is _State.TAKEN:
            self._set(_State.WAITING)

    def committed(self) -> None:
        """The commit that took it landed: the run exists."""
        if self._state is _State.TAKEN:
            self._inserted()

    async def flush(self) -> None:
        """Insert the run by itself now, unless it was (or is being) inserted.

        Raises:
            DatabaseUnavailableError: The insert failed with the database (the run may exist).
            LeaseLostError: An earlier insert of it failed so (the runner must stop).
        """
        while self._state in (_State.FLUSHING, _State.TAKEN):
            await self._wait_change()
        if self._state is not _State.WAITING:
            self._refuse_unknown()
            return
        self._set(_State.FLUSHING)
        try:
            await self._insert(self.new)
        except BaseException as error:
            self._set(_State.UNKNOWN)
            if not self._outcome.done():
                self._outcome.set_exception(error)
                self._outcome.exception()  # retrieved: start() may have stopped waiting
            raise
        self._inserted()

    def give_back(self) -> None:
        """The runner stopped before the run was written: ``start()`` inserts it unclaimed.

        Also when its commit was in flight (a cancelled runner): ``start()``'s insert then
        finds the run if that commit landed.
        """
        if self._state in (_State.WAITING, _State.TAKEN):
            self._set(_State.GIVEN_BACK)
            if not self._outcome.done():
                self._outcome.set_result(False)

    async def started(self, budget: float | None = None) -> bool:
        """Wait until the run is written: True, or False if it was given back.

        Past ``budget`` seconds (default :data:`BUDGET`, read when called) the insert is sent
        by itself (the first step goes on). The
        budget is wall time, not the engine's clock: it bounds how long the caller waits,
        and a test's hand-moved clock must not keep ``start()`` waiting for a step that
        waits for the test.

        Raises:
            DatabaseUnavailableError: The insert failed with the database.
        """
        try:
            async with asyncio.timeout(BUDGET if budget is None else budget):
                return await asyncio.shield(self._outcome)
        except TimeoutError:
            pass
        # Until written: send it now, or wait for the commit that took it, which gives it
        # back if it does not land (the attempt then runs again: send it rather than wait).
        while not self._outcome.done():
            if self.waiting:
                with contextlib.suppress(LeaseLostError):  # the outcome says what happened
                    await self.flush()
            else:
                await self._wait_change()
        return self._outcome.result()

    def _inserted(self) -> None:
        self._set(_State.INSERTED)
        if not self._outcome.done():
            self._outcome.set_result(True)

    def _refuse_unknown(self) -> None:
        if self._state in (_State.UNKNOWN, _State.GIVEN_BACK):
            raise LeaseLostError(
                f"run {self.new.id} is not this runner's: its insert failed with the database "
                "(it may exist, for the worker that claims it), or it was handed back"
            )

    def _set(self, state: _State) -> None:
        self._state = state
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self) -> None:
        await self._changed.wait()


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
