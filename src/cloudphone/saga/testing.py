"""Test helpers for users of the engine: fault injection and a clock you can move.

Nothing here is used by the engine itself; pass a :class:`FaultInjector` as ``hooks=`` and a
:class:`ManualClock` as ``clock=`` to :class:`~cloudphone.saga.SagaEngine`.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudphone.saga.context import StepContext


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        """The current (frozen) time."""
        return self._now

    def advance(self, delta: timedelta) -> None:
        """Move time forward."""
        self._now += delta


@dataclass
class _Fault:
    step: str
    compensating: bool
    remaining: int | None
    action: Callable[[StepContext], Any]
    saga: str | None = None

    def matches(self, ctx: StepContext) -> bool:
        return (
            self.step == ctx.step
            and self.compensating == ctx.compensating
            and self.saga in (None, ctx.saga_type)
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

    Example::

        faults = FaultInjector()
        faults.fail("CALL_PROVIDER", times=2, error=ConnectionError("down"))
        faults.crash_after("CALL_PROVIDER")   # SIGKILL after the action, before the commit
    """

    calls: list[Call] = field(default_factory=list)
    _before: list[_Fault] = field(default_factory=list)
    _after: list[_Fault] = field(default_factory=list)

    def fail(
        self,
        step: str,
        *,
        times: int | None = 1,
        error: BaseException | None = None,
        compensating: bool = False,
        saga: str | None = None,
    ) -> None:
        """Raise ``error`` (default RuntimeError) in the next ``times`` attempts (None: all).

        ``saga`` limits a fault to one saga type; by default it hits every saga with a step of
        that name.
        """
        exc = error if error is not None else RuntimeError(f"injected failure in {step}")

        def raise_(_ctx: StepContext) -> None:
            raise exc

        self._before.append(_Fault(step, compensating, times, raise_, saga))

    def hang(
        self,
        step: str,
        *,
        times: int | None = 1,
        compensating: bool = False,
        saga: str | None = None,
    ) -> None:
        """Block the next ``times`` attempts until they are cancelled (timeouts, deadline)."""

        async def block(_ctx: StepContext) -> None:
            await asyncio.Event().wait()

        self._before.append(_Fault(step, compensating, times, block, saga))

    def crash_before(
        self, step: str, *, compensating: bool = False, saga: str | None = None
    ) -> None:
        """SIGKILL this process when the step's next attempt starts."""
        self._before.append(_Fault(step, compensating, 1, _kill, saga))

    def crash_after(
        self, step: str, *, compensating: bool = False, saga: str | None = None
    ) -> None:
        """SIGKILL this process after the step's action succeeded, before its commit."""
        self._after.append(_Fault(step, compensating, 1, _kill, saga))

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
