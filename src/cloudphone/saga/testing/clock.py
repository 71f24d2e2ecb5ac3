"""A clock that moves only when the test says so, and fires the timers it passes."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class _ManualTimer:
    """A callback waiting for a :class:`ManualClock` to reach its time."""

    def __init__(self, at: datetime, callback: Callable[[], None]) -> None:
        self.at = at
        self._callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        """Do not call it."""
        self._callback = None

    def cancelled(self) -> bool:
        """True once cancelled or run."""
        return self._callback is None

    def fire(self) -> None:
        """Run the callback (once)."""
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


class ManualClock:
    """A clock that only moves when told to.

    Give it to the engine (``MemoryEngine(clock=...)`` or ``SagaEngine(clock=...)``) and every
    wait of the engine is measured on it: :meth:`advance` makes due retries, polls, lease
    expiries, step timeouts and deadlines fire at once, and nothing fires before.

    Args:
        start: The time it shows first (default 2030-01-01 UTC).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._timers: list[tuple[datetime, int, _ManualTimer]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        """The current (frozen) time."""
        return self._now

    def call_at(self, at: datetime, callback: Callable[[], None]) -> _ManualTimer:
        """Call ``callback`` once the clock reaches ``at`` (soon, if it already has)."""
        timer = _ManualTimer(at, callback)
        if at <= self._now:
            asyncio.get_running_loop().call_soon(timer.fire)
        else:
            heapq.heappush(self._timers, (at, next(self._order), timer))
        return timer

    def advance(self, delta: timedelta) -> None:
        """Jump forward and fire, in time order, every timer it passes.

        The callbacks only wake the engine's tasks, which then run at the new time: a jump of
        a minute fires a retry due in 1 s once, at the end of the minute. To let time *pass*,
        with each timer's work done at its own time, use
        :meth:`~cloudphone.saga.testing.MemoryEngine.advance`.
        """
        if delta < timedelta(0):
            raise ValueError(f"a clock cannot go back ({delta})")
        self._now += delta
        while self._timers and self._timers[0][0] <= self._now:
            _at, _n, timer = heapq.heappop(self._timers)
            timer.fire()

    def next_timer(self) -> datetime | None:
        """When the earliest timer still waiting is due, or None."""
        while self._timers and self._timers[0][2].cancelled():
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    @property
    def pending(self) -> int:
        """Timers waiting for a later time."""
        return sum(1 for _at, _n, timer in self._timers if not timer.cancelled())
