"""The periodic housekeeping loop: first round at once, failures logged, stop cancels."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from cloudphone.periodic import Periodic
from cloudphone.saga.errors import DatabaseUnavailableError


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


async def test_a_database_outage_is_one_warning_and_one_line_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rounds failing on an unreachable database log once (no traceback), then once on recovery."""
    rounds: list[int] = []
    recovered = asyncio.Event()

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) <= 3:
            raise DatabaseUnavailableError("connect: ConnectionRefusedError")
        recovered.set()

    caplog.set_level(logging.INFO, logger="cloudphone.periodic")
    loop = Periodic("watch", work, timedelta(milliseconds=1))
    loop.start()
    await asyncio.wait_for(recovered.wait(), timeout=5)
    await loop.stop()

    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    skipped = [line for line in lines if "skipped while the database is unavailable" in line[1]]
    assert [level for level, _ in skipped] == [logging.WARNING]
    assert [m for _, m in lines if "resumed" in m] == ["watch rounds resumed: the database is back"]
    assert not any(r.exc_info for r in caplog.records)
    assert "round failed" not in caplog.text
