"""Waiting on the engine's clock: sleeps, event waits and timeouts.

The worker and the runner wait only through these, never on the event loop's own timers, so
a clock moved by hand (:class:`cloudphone.saga.testing.ManualClock`) decides when a retry comes
due, a poll runs, a lease is renewed, or a step times out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from cloudphone.saga.ports import Clock


async def sleep(clock: Clock, seconds: float) -> None:
    """Wait until ``clock`` has moved ``seconds`` on."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    timer = clock.call_at(clock.now() + timedelta(seconds=seconds), wake)
    try:
        await future
    finally:
        timer.cancel()


async def wait_event(clock: Clock, event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set, or ``clock`` has moved ``seconds`` on (then set it)."""
    timer = clock.call_at(clock.now() + timedelta(seconds=seconds), event.set)
    try:
        await event.wait()
    finally:
        timer.cancel()


@asynccontextmanager
async def timeout(clock: Clock, seconds: float | None) -> AsyncIterator[asyncio.Timeout]:
    """Like ``asyncio.timeout(seconds)``, with the time measured on ``clock``.

    ``scope.expired()`` tells, as with asyncio, whether this timeout cut the block short.
    """
    async with asyncio.timeout(None) as scope:
        if seconds is None:
            yield scope
            return
        loop = asyncio.get_running_loop()

        def expire() -> None:
            if scope.when() is None:
                scope.reschedule(loop.time())

        timer = clock.call_at(clock.now() + timedelta(seconds=seconds), expire)
        try:
            yield scope
        finally:
            timer.cancel()
