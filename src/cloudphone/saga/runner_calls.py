"""Calls one attempt of a step: its timeout, the saga's deadline, an operator's interrupt.

Mixed into :class:`~cloudphone.saga.runner.Runner`, which decides what an attempt's end
means. Here the action runs (with the hooks around it), what it returned is checked, and an
attempt's end is named for its metric and span (:func:`_outcome_of`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from cloudphone.saga import timers
from cloudphone.saga.context import _CURRENT, StepContext
from cloudphone.saga.definition import Step
from cloudphone.saga.errors import LeaseLostError, RetryLater, SagaError, StaleStateError
from cloudphone.saga.outage import StoreFailure
from cloudphone.saga.outputs import check_collision, check_output
from cloudphone.saga.ports import Clock, StepHooks
from cloudphone.saga.progress import RunState


class StepTimeoutError(SagaError, TimeoutError):
    """An attempt ran longer than its step's timeout."""


class _DeadlineHit(Exception):
    """The saga deadline cancelled the attempt (before the pivot)."""


class _CancelHit(Exception):
    """An operator's cancel interrupted the attempt."""


_OUTCOMES: dict[type[BaseException], str] = {
    _DeadlineHit: "deadline",
    _CancelHit: "cancelled",
    StepTimeoutError: "timeout",
    RetryLater: "postponed",
}
"""Metric outcome label of an attempt that ended with this exception type."""

_CUT_SHORT: dict[type[BaseException], str] = {
    LeaseLostError: "lease_lost",
    StaleStateError: "stale_state",
    StoreFailure: "store_failure",
    asyncio.CancelledError: "interrupted",
}
"""Span outcome of an attempt that ended before its outcome was committed."""

_QUIET = (RetryLater, _DeadlineHit, _CancelHit)
"""Attempt endings that are no error of the step: the span's outcome says what happened."""


class AttemptCalls:
    """Calling and interrupting an attempt, mixed into :class:`~cloudphone.saga.runner.Runner`.

    The attributes are the runner's; it sets them.
    """

    state: RunState
    _clock: Clock
    _hooks: StepHooks | None
    _task: asyncio.Task[Any] | None
    _interruptible: bool
    _interrupted: bool

    def request_cancel(self) -> None:
        """An operator asked to cancel: interrupt a compensatable attempt now."""
        self.state.cancel_requested = True
        if self._interruptible and self._task is not None and not self._interrupted:
            self._interrupted = True
            self._task.cancel()

    async def _call(
        self,
        fn: Callable[[StepContext], Any],
        ctx: StepContext,
        step: Step,
        started: datetime,
        compensating: bool,
        interruptible: bool,
        deadline: datetime | None,
    ) -> Mapping[str, Any] | None:
        limit = step.timeout.total_seconds() if step.timeout is not None else None
        deadline_first = False
        if deadline is not None:
            remaining = max((deadline - started).total_seconds(), 0.0)
            if limit is None or remaining < limit:
                limit, deadline_first = remaining, True
        self._interruptible = interruptible
        token = _CURRENT.set(ctx)
        scope: asyncio.Timeout | None = None
        try:
            if limit is None:
                output = await self._run_action(fn, ctx)
            else:
                async with timers.timeout(self._clock, limit) as scope:
                    output = await self._run_action(fn, ctx)
        except TimeoutError:
            if scope is None or not scope.expired():
                raise
            if deadline_first:
                raise _DeadlineHit() from None
            raise StepTimeoutError(f"attempt exceeded the step timeout of {step.timeout}") from None
        except asyncio.CancelledError:
            task = self._task
            if self._interrupted and task is not None and task.uncancel() == 0:
                self._interrupted = False
                raise _CancelHit() from None
            raise
        finally:
            self._interruptible = False
            _CURRENT.reset(token)
        # A compensation's return value is ignored; a step's must be a JSON object that
        # overwrites nothing of the input's or of another step's.
        checked = None
        if not compensating:
            checked = check_output(step, output)
            s, view = self.state, ctx._run
            legacy = view.legacy if view is not None else lambda: False
            check_collision(step.name, checked, s.input, s.outputs, legacy)
        if self._hooks is not None:
            await self._hooks.after_action(ctx, checked)
        return checked

    async def _run_action(self, fn: Callable[[StepContext], Any], ctx: StepContext) -> Any:
        if self._hooks is not None:
            await self._hooks.before_attempt(ctx)
        return await fn(ctx)


def _outcome_of(error: BaseException, compensating: bool) -> str:
    """The metric (and span) outcome of an attempt that raised ``error``."""
    return _OUTCOMES.get(type(error), "compensation_failure" if compensating else "failure")
