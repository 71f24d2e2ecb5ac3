"""The periodic housekeeping loop: first round at once, failures logged, stop cancels."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from cloudphone.periodic import Periodic


async def test_rounds_run_at_once_then_every_interval_and_survive_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first round runs on start; a failing round is logged and the next one still runs."""
    rounds: list[int] = []
    third = asyncio.Event()

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 2:
            raise RuntimeError("provider down")
        if len(rounds) == 3:
            third.set()

    loop = Periodic("test-loop", work, timedelta(milliseconds=1))
    loop.start()
    loop.start()  # a second start does not add a second loop
    await asyncio.wait_for(third.wait(), timeout=5)
    await loop.stop()

    assert rounds[:3] == [0, 1, 2]
    assert not loop.running
    assert "test-loop round failed" in caplog.text
    count = len(rounds)
    await asyncio.sleep(0)
    assert len(rounds) == count  # stopped: no round after stop()


async def test_a_zero_interval_starts_nothing() -> None:
    """``interval`` 0 turns the loop off."""
    called: list[None] = []

    async def work() -> None:
        called.append(None)

    loop = Periodic("off", work, timedelta(0))
    loop.start()
    assert not loop.running
    await loop.stop()
    assert called == []
