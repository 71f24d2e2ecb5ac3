"""Living through a database outage: capped backoff, and a bounded log of what happened.

While the database is down every loop of a worker (claims, lease renewals, the LISTEN
connection, each runner's pending write through its :class:`PatientStore`) retries on its own
:class:`Backoff`. They share one :class:`Outage`, which logs the first failure, then at most one
line per ``every``, then the recovery, and remembers when the outage began (see
:meth:`Outage.takeover_before`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga import timers
from cloudphone.saga.context import QueuedWrite
from cloudphone.saga.errors import (
    DatabaseUnavailableError,
    LeaseLostError,
    QueuedWriteError,
    StaleStateError,
    StepGroupAborted,
)
from cloudphone.saga.ports import Clock, Committed, ProgressStore
from cloudphone.saga.progress import Progress, RunState
from cloudphone.saga.records import SagaRun

if TYPE_CHECKING:
    from cloudphone.saga.pending import PendingInsert

log = logging.getLogger("cloudphone.saga")


class Backoff:
    """Capped exponential delays with full jitter: ``uniform(0, min(cap, initial * 2**n))``.

    Args:
        initial: First delay's upper bound, in seconds.
        cap: Largest delay, in seconds; reached after a few failures.
        rand: Uniform source in ``[0, 1)``.
    """

    def __init__(
        self, initial: float, cap: float, rand: Callable[[], float] = random.random
    ) -> None:
        self._initial = initial
        self._cap = max(cap, initial)
        self._rand = rand
        self._failures = 0

    def next(self) -> float:
        """The delay before the next try (the first one is short, so recovery is quick)."""
        bound = min(self._cap, self._initial * 2.0**self._failures)
        self._failures = min(self._failures + 1, 32)
        # Half fixed, half jitter: never a busy loop, and workers do not retry in lockstep.
        return bound / 2 + self._rand() * bound / 2

    def reset(self) -> None:
        """Back to the first delay (the last try succeeded)."""
        self._failures = 0


class Outage:
    """What this process saw of the database being unreachable, logged at a bounded rate.

    Args:
        clock: Time source.
        every: Longest silence while it lasts: one "still unavailable" line per period.
        flap: A failure this soon after the recovery continues the same outage (a server
            shutting down still answers a few calls, one starting up refuses a few).
    """

    def __init__(
        self,
        clock: Clock,
        every: timedelta = timedelta(seconds=30),
        flap: timedelta = timedelta(seconds=5),
    ) -> None:
        self._clock = clock
        self._every = every
        self._flap = flap
        self.began: datetime | None = None
        """When the current (or last) outage was first noticed."""
        self.ended: datetime | None = None
        """When the database answered again after it (None while it lasts)."""
        self._failures = 0
        self._logged_at: datetime | None = None

    @property
    def down(self) -> bool:
        """True from the first failure until something succeeds again."""
        return self.began is not None and self.ended is None

    def failed(self, what: str, error: BaseException) -> None:
        """Record a failure of ``what`` (claims, lease renewal, a progress write…)."""
        now = self._clock.now()
        self._failures += 1
        if self.ended is not None and now - self.ended < self._flap:
            self.ended = None  # the same outage goes on: keep when it began
        if not self.down:
            self.began, self.ended, self._failures, self._logged_at = now, None, 1, now
            log.warning(
                "database unavailable (%s: %s: %s); backing off until it answers again",
                what,
                type(error).__name__,
                error,
            )
            return
        assert self._logged_at is not None
        if now - self._logged_at >= self._every:
            self._logged_at = now
            assert self.began is not None
            log.warning(
                "database still unavailable after %.0f s (%d failed calls; last: %s: %s)",
                (now - self.began).total_seconds(),
                self._failures,
                what,
                error,
            )

    def ok(self) -> None:
        """Record a success: ends the outage, if there is one."""
        if not self.down:
            return
        now = self._clock.now()
        self.ended = now
        assert self.began is not None
        log.warning(
            "database reachable again after %.1f s (%d failed calls meanwhile)",
            (now - self.began).total_seconds(),
            self._failures,
        )

    def takeover_before(self, now: datetime, lease: timedelta) -> datetime:
        """Leases that expired before this time may be taken over.

        Normally ``now``. While the database is down, and for one lease after it answers
        again, only leases that expired before the outage began: a lease that ran out while
        nobody could renew it says nothing about its owner, who gets one lease to renew it.
        A live owner renews every third of a lease, so its lease never runs out before the
        outage is noticed.
        """
        if self.began is None or (self.ended is not None and now >= self.ended + lease):
            return now
        return min(now, self.began)


WRITE_BACKOFF = (0.05, 2.0)
"""First and largest delay (seconds) between tries of a runner's call while the database is
down: the cap bounds how long after the database is back a waiting runner notices."""

Attempt = Callable[[AsyncConnection], Awaitable[tuple[Progress, Sequence[QueuedWrite]]]]
"""A transactional attempt: runs the action on the session, returns the progress to commit
and the writes the action queued (``ctx.write``), which commit with it."""


class StoreFailure(Exception):
    """A progress write failed for a reason other than a lost lease or an outage."""


async def guarded(write: Awaitable[Committed]) -> Committed:
    """``write``'s result; a store error the runner cannot handle becomes StoreFailure."""
    try:
        return await write
    except (
        LeaseLostError,
        StaleStateError,
        DatabaseUnavailableError,
        StepGroupAborted,
        QueuedWriteError,
    ):
        raise
    except Exception as error:
        raise StoreFailure(f"{type(error).__name__}: {error}") from error


class PatientStore:
    """A runner's store calls, tried again with backoff for as long as the database is down.

    Args:
        store: The store.
        outage: Shared record of the outage (logging, takeover grace).
        clock: The engine's clock, which the waits between tries are measured on.
    """

    def __init__(self, store: ProgressStore, outage: Outage, clock: Clock) -> None:
        self._store = store
        self._outage = outage
        self._clock = clock
        self._backoff = Backoff(*WRITE_BACKOFF)

    async def commit(self, state: RunState, progress: Progress) -> Committed:
        """Commit ``progress`` in a transaction of its own (safe to repeat: fenced by seq)."""
        while True:
            try:
                committed = await guarded(
                    self._store.commit(state.id, state.epoch, progress, state.last_seq)
                )
            except DatabaseUnavailableError as error:
                await self.pause("progress write", error)
                continue
            self.recovered()
            return committed

    async def transaction(
        self, state: RunState, attempt: Attempt, first: PendingInsert | None = None
    ) -> tuple[Progress, Committed]:
        """Run a transactional attempt and commit it; again, if the database lost it.

        With ``first`` (a run whose insert waits for this commit) and the run not written
        yet, the attempt runs in a transaction of its own whose commit inserts the run.
        """
        alone = False
        while True:
            progress: Progress | None = None
            # Not known to exist yet: the commit takes the insert (or finds the run written).
            deferred = first if first is not None and not first.written else None
            try:
                opened = (
                    deferred.store.first_step_transaction(deferred.take)
                    if deferred is not None
                    else self._store.step_transaction(alone)
                )
                async with opened as tx:
                    progress, writes = await attempt(tx.session)
                    committed = await guarded(
                        tx.commit(state.id, state.epoch, progress, state.last_seq, writes)
                    )
                    if deferred is not None:
                        deferred.committed()
            except QueuedWriteError as failed:
                # Rolled back: the attempt failed as if its action had raised the error.
                raise failed.error from None
            except StepGroupAborted:
                # Another run's step in the shared transaction failed: it rolled back, and
                # this attempt runs again in a transaction of its own.
                alone = True
                continue
            except DatabaseUnavailableError as error:
                if deferred is not None:
                    deferred.answer_lost(error)
                landed = await self._landed(state, progress, error, deferred)
                if landed is not None and progress is not None:
                    if deferred is not None:
                        deferred.committed()
                    return progress, landed
                # Not committed: the business write rolled back with the progress record, so
                # the action runs again in a fresh transaction, as the same attempt.
                log.info(
                    "step transaction lost with the database; running the attempt again",
                    extra={"saga_id": state.id, "step": state.step, "attempt": state.attempt},
                )
                continue
            finally:
                if deferred is not None:
                    deferred.untake()  # a no-op unless a commit took it and did not land
            self.recovered()
            return progress, committed

    async def _landed(
        self,
        state: RunState,
        progress: Progress | None,
        error: DatabaseUnavailableError,
        first: PendingInsert | None,
    ) -> Committed | None:
        """After ``error`` lost a transaction: wait for the database, then whether it committed."""
        while True:
            await self.pause("step transaction", error)
            try:
                if first is not None:
                    landed = await first.store.inserted(first.new, progress)
                else:
                    landed = await self._store.landed(
                        state.id, state.epoch, state.last_seq, progress
                    )
            except DatabaseUnavailableError as again:
                error = again
                continue
            self.recovered()
            return landed

    async def get(self, run_id: str) -> SagaRun | None:
        """The stored run."""
        while True:
            try:
                run = await self._store.get(run_id)
            except DatabaseUnavailableError as error:
                await self.pause("reading a run back", error)
                continue
            self.recovered()
            return run

    async def pause(self, what: str, error: DatabaseUnavailableError) -> None:
        """Record the failure of ``what`` and wait before the next try."""
        self._outage.failed(what, error)
        # Waiting for the database to come back: it has no event to wait on.
        await timers.sleep(self._clock, self._backoff.next())

    def recovered(self) -> None:
        """A call succeeded: the next failure waits a short time again."""
        self._backoff.reset()
        self._outage.ok()
