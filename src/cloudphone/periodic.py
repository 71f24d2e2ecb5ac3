"""A background task that runs one round of housekeeping every interval.

Services own their rounds (a device liveness check, a payment reconcile); this is only the
loop around them, shared so each behaves the same: the first round runs at once, a failed round
is logged and the next one runs on time, and :meth:`Periodic.stop` cancels cleanly. A round that
fails because the database is unreachable is one warning per outage (no traceback every round),
and one line when a round succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from cloudphone.saga.store.disconnects import is_database_unavailable

log = logging.getLogger("cloudphone.periodic")


class Periodic:
    """Runs ``work`` now (or after one interval) and then every ``interval`` until stopped.

    Args:
        name: Names the task and the log line of a failed round.
        work: One round of work; its exceptions are logged, never end the loop.
        interval: Time between the end of one round and the start of the next; zero (or
            less) means no loop at all: :meth:`start` does nothing.
        delay_first: Wait one interval before the first round (the caller just ran one).
    """

    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[object]],
        interval: timedelta,
        *,
        delay_first: bool = False,
    ) -> None:
        self.name = name
        self._work = work
        self.interval = interval
        self.delay_first = delay_first
        self._task: asyncio.Task[None] | None = None
        self._database_down = False

    @property
    def running(self) -> bool:
        """Whether the loop is running."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop in the background (once; a zero interval starts nothing)."""
        if self._task is None and self.interval > timedelta(0):
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait until it ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        seconds = self.interval.total_seconds()
        if self.delay_first:
            await asyncio.sleep(seconds)
        while True:
            await self._round()
            await asyncio.sleep(seconds)

    async def _round(self) -> None:
        try:
            await self._work()
        except Exception as error:  # a failed round must not end the loop; the next one retries
            if not is_database_unavailable(error):
                log.exception("%s round failed", self.name)
            elif not self._database_down:
                self._database_down = True
                log.warning(
                    "%s rounds skipped while the database is unavailable: %s", self.name, error
                )
        else:
            if self._database_down:
                self._database_down = False
                log.info("%s rounds resumed: the database is back", self.name)
