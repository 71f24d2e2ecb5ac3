"""The narrow interfaces between the runner and the rest: store, hooks, clock.

The whole store protocol the worker and the engine use is
:class:`cloudphone.saga.store.base.SagaStore`; the runner needs only its
:class:`ProgressStore` part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.context import QueuedWrite, StepContext
from cloudphone.saga.progress import Progress
from cloudphone.saga.records import SagaRun


@dataclass(frozen=True)
class Committed:
    """What the store learnt while committing a Progress."""

    cancel_requested: bool
    """An operator asked to cancel the run (read in the same statement)."""
    last_seq: int
    """The run's ``last_seq`` after the write: the fence of the runner's next write."""

    @classmethod
    def of(cls, written: tuple[bool, int]) -> Committed:
        """From what a progress write that applied returned: (cancel_requested, last_seq)."""
        return cls(cancel_requested=written[0], last_seq=written[1])


class StepTransaction(Protocol):
    """A database transaction shared by a transactional step and its progress record."""

    @property
    def session(self) -> AsyncConnection:
        """The connection the step writes through."""
        ...

    async def commit(
        self,
        run_id: str,
        epoch: int,
        progress: Progress,
        seq: int | None = None,
        writes: Sequence[QueuedWrite] = (),
    ) -> Committed:
        """Run the step's queued writes, record progress in this transaction, then commit.

        LeaseLostError rolls back (the writes too). A store runs the writes, in order, or
        refuses them (:class:`~cloudphone.saga.errors.QueuedWriteError`); never drops them.
        A write that fails raises QueuedWriteError (with nothing committed), or
        DatabaseUnavailableError if the connection failed under it.
        """
        ...


class ProgressStore(Protocol):
    """Where the runner records progress.

    Every write is fenced by the run's epoch and, given ``seq``, by the ``last_seq`` the
    runner last saw, so repeating a write whose answer was lost never applies it twice.
    Connection trouble raises DatabaseUnavailableError (the outcome may be unknown).
    """

    async def commit(
        self, run_id: str, epoch: int, progress: Progress, seq: int | None = None
    ) -> Committed:
        """Record progress in a transaction of its own; raises LeaseLostError if fenced off.

        Safe to repeat with the same ``progress`` and ``seq`` after DatabaseUnavailableError:
        a repeat of a write that did land answers Committed without writing again.
        """
        ...

    async def landed(
        self, run_id: str, epoch: int, seq: int, progress: Progress | None
    ) -> Committed | None:
        """Whether a write after ``seq`` landed: Committed for ``progress``, None for none.

        Raises:
            LeaseLostError: The run's epoch moved.
            StaleStateError: Another write of this epoch landed (the runner must reload).
        """
        ...

    async def get(self, run_id: str) -> SagaRun | None:
        """The run as stored."""
        ...

    def step_transaction(self, alone: bool = False) -> AbstractAsyncContextManager[StepTransaction]:
        """Open a transaction for a transactional step.

        It may be shared with other runs' steps (PostgreSQL's step groups) unless ``alone``;
        a shared one that rolls back for another step raises StepGroupAborted from the
        block, and the attempt runs again alone.
        """
        ...


class Timer(Protocol):
    """A callback scheduled on a clock."""

    def cancel(self) -> None:
        """Do not call it (a no-op once it ran)."""
        ...

    def cancelled(self) -> bool:
        """Whether it was cancelled (a clock may also say so once it ran)."""
        ...


class Clock(Protocol):
    """Source of the current time (aware UTC), and of the timers that wait on it.

    Every wait of the engine (retries coming due, polls, lease renewals, step timeouts and
    deadlines) is a timer on its clock, so a clock that is moved by hand
    (:class:`cloudphone.saga.testing.ManualClock`) fires them when it passes their time.
    """

    def now(self) -> datetime:
        """The current time."""
        ...

    def call_at(self, at: datetime, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` (on the running event loop) once the clock reaches ``at``."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """Current UTC time."""
        return datetime.now(UTC)

    def call_at(self, at: datetime, callback: Callable[[], None]) -> Timer:
        """Schedule ``callback`` on the event loop's timer for ``at``."""
        delay = max((at - self.now()).total_seconds(), 0.0)
        return asyncio.get_running_loop().call_later(delay, callback)


class StepHooks(Protocol):
    """Called around each attempt; used by :mod:`cloudphone.saga.testing` to inject faults."""

    async def before_attempt(self, ctx: StepContext) -> None:
        """Runs inside the attempt (its timeout applies) before the action."""
        ...

    async def after_action(self, ctx: StepContext, output: Mapping[str, Any] | None) -> None:
        """Runs after the action succeeded, before its progress is committed."""
        ...
