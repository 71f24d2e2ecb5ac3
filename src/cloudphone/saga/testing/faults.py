"""Fault injection: make chosen attempts of chosen steps fail, hang, crash or do something.

Pass a :class:`FaultInjector` as ``hooks=`` to :class:`~cloudphone.saga.SagaEngine` (the
memory engine has one built in, ``MemoryEngine.faults``). The engine itself never uses it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cloudphone.saga.context import StepContext

Boundary = Literal["before", "after"]
"""Where a fault strikes: ``before`` the action runs (inside the attempt, its timeout
applies), or ``after`` it returned, before its progress is committed."""

FaultAction = Callable[[StepContext], Any]
"""What a fault does with the attempt's context; may be async; raising fails the attempt."""


@dataclass
class _Fault:
    step: str
    compensating: bool
    remaining: int | None
    action: FaultAction
    saga: str | None = None
    attempt: int | None = None

    def matches(self, ctx: StepContext) -> bool:
        return (
            self.step == ctx.step
            and self.compensating == ctx.compensating
            and self.saga in (None, ctx.saga_type)
            and self.attempt in (None, ctx.attempt)
        )


@dataclass(frozen=True)
class Call:
    """An attempt the injector saw."""

    step: str
    attempt: int
    compensating: bool
    saga_id: str
    saga_type: str


@dataclass
class FaultInjector:
    """Makes chosen attempts fail, hang or kill the process; records every attempt.

    Every fault names a step (or, with ``compensating=True``, its compensation) and may be
    narrowed to one saga type (``saga=``) and one attempt number (``attempt=``); it strikes
    the next ``times`` matching attempts (None: all of them). The first matching fault that
    still has strikes left acts; the others wait for later attempts.

    Example::

        faults = FaultInjector()
        faults.fail("CALL_PROVIDER", times=2, error=ConnectionError("down"))
        faults.fail("RESERVE", attempt=3)      # only the third attempt fails
        faults.crash_after("CALL_PROVIDER")   # SIGKILL after the action, before the commit
    """

    calls: list[Call] = field(default_factory=list)
    _before: list[_Fault] = field(default_factory=list)
    _after: list[_Fault] = field(default_factory=list)
    _hanging: set[str] = field(default_factory=set)

    def fail(
        self,
        step: str,
        *,
        times: int | None = 1,
        error: BaseException | None = None,
        compensating: bool = False,
        saga: str | None = None,
        attempt: int | None = None,
    ) -> None:
        """Raise ``error`` (default RuntimeError) in the next ``times`` attempts (None: all).

        ``saga`` limits a fault to one saga type; by default it hits every saga with a step of
        that name. ``attempt`` limits it to that attempt number.
        """
        exc = error if error is not None else RuntimeError(f"injected failure in {step}")

        def raise_(_ctx: StepContext) -> None:
            raise exc

        self._before.append(_Fault(step, compensating, times, raise_, saga, attempt))

    def hang(
        self,
        step: str,
        *,
        times: int | None = 1,
        compensating: bool = False,
        saga: str | None = None,
        attempt: int | None = None,
    ) -> None:
        """Block the next ``times`` attempts until they are cancelled (timeouts, deadline)."""

        async def block(ctx: StepContext) -> None:
            self._hanging.add(ctx.saga_id)
            try:
                await asyncio.Event().wait()
            finally:
                self._hanging.discard(ctx.saga_id)

        self._before.append(_Fault(step, compensating, times, block, saga, attempt))

    def add(
        self,
        step: str,
        action: FaultAction,
        *,
        when: Boundary = "before",
        times: int | None = 1,
        compensating: bool = False,
        saga: str | None = None,
        attempt: int | None = None,
    ) -> None:
        """Call ``action(ctx)`` at a boundary of the next ``times`` matching attempts.

        Anything may be done there (change the world the step sees, say); an exception it
        raises fails the attempt like the step's own would.
        """
        faults = self._before if when == "before" else self._after
        faults.append(_Fault(step, compensating, times, action, saga, attempt))

    def crash_before(
        self,
        step: str,
        *,
        compensating: bool = False,
        saga: str | None = None,
        attempt: int | None = None,
    ) -> None:
        """SIGKILL this process when the step's next attempt starts (real worker processes).

        In-process, ``MemoryEngine.crash_at`` simulates the same without a process.
        """
        self.add(step, _kill, compensating=compensating, saga=saga, attempt=attempt)

    def crash_after(
        self,
        step: str,
        *,
        compensating: bool = False,
        saga: str | None = None,
        attempt: int | None = None,
    ) -> None:
        """SIGKILL this process after the step's action succeeded, before its commit."""
        self.add(step, _kill, when="after", compensating=compensating, saga=saga, attempt=attempt)

    @property
    def hanging(self) -> frozenset[str]:
        """Runs whose attempt is blocked in :meth:`hang` now (waiting to be cancelled)."""
        return frozenset(self._hanging)

    def attempts(self, step: str, *, compensating: bool = False, saga: str | None = None) -> int:
        """How many attempts of ``step`` (or its compensation) started."""
        return sum(
            1
            for c in self.calls
            if c.step == step and c.compensating == compensating and saga in (None, c.saga_type)
        )

    async def before_attempt(self, ctx: StepContext) -> None:
        """Hook: record the attempt and apply a matching 'before' fault."""
        self.calls.append(Call(ctx.step, ctx.attempt, ctx.compensating, ctx.saga_id, ctx.saga_type))
        await self._apply(self._before, ctx)

    async def after_action(self, ctx: StepContext, output: Mapping[str, Any] | None) -> None:
        """Hook: apply a matching 'after' fault."""
        await self._apply(self._after, ctx)

    async def _apply(self, faults: list[_Fault], ctx: StepContext) -> None:
        for fault in faults:
            if not fault.matches(ctx):
                continue
            if fault.remaining is not None:
                if fault.remaining <= 0:
                    continue
                fault.remaining -= 1
            result = fault.action(ctx)
            if asyncio.iscoroutine(result):
                await result
            return


def _kill(_ctx: StepContext) -> None:
    os.kill(os.getpid(), signal.SIGKILL)
