"""ManualClock and the engine's clock waits: nothing fires before the clock passes its time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from cloudphone.saga import timers
from cloudphone.saga.ports import SystemClock
from cloudphone.saga.testing import ManualClock


async def test_timers_fire_in_time_order_when_the_clock_passes_them() -> None:
    clock = ManualClock(datetime(2031, 5, 1, tzinfo=UTC))
    fired: list[str] = []
    clock.call_at(clock.now() + timedelta(seconds=5), lambda: fired.append("5s"))
    clock.call_at(clock.now() + timedelta(seconds=1), lambda: fired.append("1s"))
    cancelled = clock.call_at(clock.now() + timedelta(seconds=2), lambda: fired.append("2s"))
    cancelled.cancel()
    clock.advance(timedelta(milliseconds=999))
    assert fired == []
    clock.advance(timedelta(seconds=10))
    assert fired == ["1s", "5s"]
    assert clock.now() == datetime(2031, 5, 1, 0, 0, 10, 999000, tzinfo=UTC)
    assert clock.pending == 0


async def test_a_timer_already_due_runs_soon_and_can_still_be_cancelled() -> None:
    clock = ManualClock()
    fired: list[int] = []
    clock.call_at(clock.now(), lambda: fired.append(1))
    clock.call_at(clock.now() - timedelta(seconds=1), lambda: fired.append(2)).cancel()
    assert fired == []
    await asyncio.sleep(0)
    assert fired == [1]


def test_the_clock_cannot_go_back() -> None:
    with pytest.raises(ValueError, match="cannot go back"):
        ManualClock().advance(timedelta(seconds=-1))


async def test_sleep_and_timeout_wait_for_the_clock_not_the_wall() -> None:
    clock = ManualClock()
    slept = asyncio.create_task(timers.sleep(clock, 3600))
    await asyncio.sleep(0.01)
    assert not slept.done(), "an hour of clock time passed in 10 ms of wall time"
    clock.advance(timedelta(hours=1))
    await asyncio.wait_for(slept, 1)

    async def hang() -> bool:
        async with timers.timeout(clock, 30) as scope:
            await asyncio.Event().wait()
        return scope.expired()  # pragma: no cover - the timeout raises

    hung = asyncio.create_task(hang())
    await asyncio.sleep(0.01)
    assert not hung.done()
    clock.advance(timedelta(seconds=30))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(hung, 1)


async def test_timeout_that_does_not_expire_leaves_the_block_alone() -> None:
    clock = ManualClock()
    async with timers.timeout(clock, 5) as scope:
        await asyncio.sleep(0)
    async with timers.timeout(clock, None) as unbounded:
        await asyncio.sleep(0)
    assert (scope.expired(), unbounded.expired(), clock.pending) == (False, False, 0)


async def test_wait_event_returns_on_the_event_or_the_clock() -> None:
    clock = ManualClock()
    by_clock = asyncio.create_task(timers.wait_event(clock, asyncio.Event(), 60))
    event = asyncio.Event()
    by_event = asyncio.create_task(timers.wait_event(SystemClock(), event, 3600))
    await asyncio.sleep(0)
    assert not by_clock.done()
    assert not by_event.done()
    clock.advance(timedelta(seconds=60))
    event.set()
    await asyncio.wait_for(asyncio.gather(by_clock, by_event), 1)
    assert clock.pending == 0
