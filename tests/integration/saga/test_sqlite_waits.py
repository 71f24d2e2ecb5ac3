"""The engine on SQLite while something else holds the file.

Another process's write lock, or a long read in this process: runs wait (or go on) without
failing attempts or stalling timers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloudphone.saga import Database, EventKind, Saga, SagaEngine, SagaStatus, StepContext
from tests.support.sqlite_lock import write_lock_held
from tests.support.waiting import eventually


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite file whose busy timeout (200 ms) is shorter than the locks held below."""
    opened = Database(f"sqlite+aiosqlite:///{tmp_path / 'engine.db'}", busy_timeout_ms=200)
    async with opened.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE ledger (saga_id TEXT PRIMARY KEY)"))
    yield opened
    await opened.dispose()


def locked_out_saga(name: str, entered: asyncio.Event, go: asyncio.Event) -> Saga:
    """PLAIN waits for ``go``; then RECORD writes a ledger row in its step transaction."""
    saga = Saga(name)

    @saga.step("PLAIN")
    async def plain(ctx: StepContext) -> dict[str, Any]:
        entered.set()
        await go.wait()
        return {"plain": ctx.attempt}

    @saga.step("RECORD", transactional=True)
    async def record(ctx: StepContext) -> None:
        await ctx.session.execute(
            sa.text("INSERT INTO ledger (saga_id) VALUES (:id)"), {"id": ctx.saga_id}
        )

    return saga


def outage_logged(caplog: pytest.LogCaptureFixture) -> bool:
    return any("database unavailable" in r.getMessage() for r in caplog.records)


async def test_runs_wait_for_another_process_holding_the_write_lock(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A step's progress write and the next step's transaction wait out a CLI's long lock.

    The lock is held past the busy timeout: the engine treats that as an outage (backs off,
    tries again) and the run completes with every step on its first attempt.
    """
    caplog.set_level(logging.WARNING, logger="cloudphone.saga")
    entered, go = asyncio.Event(), asyncio.Event()
    saga = locked_out_saga("locked_out", entered, go)
    engine = SagaEngine(
        db,
        [saga],
        worker_id="w-lock",
        lease=timedelta(seconds=10),
        poll_interval=timedelta(milliseconds=50),
    )
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start("locked_out", {})
        await entered.wait()
        async with write_lock_held(tmp_path / "engine.db") as holder:
            go.set()  # PLAIN returns: its progress write needs the lock
            await eventually(lambda: asyncio.sleep(0, outage_logged(caplog)), bool, timeout=15)
            waiting = await engine.get(saga_id)  # reads go on meanwhile
            assert waiting.status is SagaStatus.RUNNING
            assert waiting.current_step == "PLAIN"
            await holder.release()
        run = await engine.wait(saga_id, timeout=timedelta(seconds=20))
        history = await engine.history(saga_id)
    await engine.close()
    assert run.status is SagaStatus.COMPLETED
    kinds = [event.kind for event in history]
    assert EventKind.STEP_FAILED not in kinds
    assert EventKind.LEASE_TAKEOVER not in kinds
    assert [(e.step, e.attempt) for e in history if e.kind is EventKind.STEP_SUCCEEDED] == [
        ("PLAIN", 1),
        ("RECORD", 1),
    ]
    async with db.read() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM ledger")) == 1


async def test_a_transactional_step_waits_for_the_lock_before_it_runs(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its transaction cannot begin while another connection writes: it runs once, afterwards.

    The other writer is a second Database on the same file (SQLite's lock, not this engine's
    in-process one), taken right after the start claimed the run and before its drive began.
    """
    caplog.set_level(logging.WARNING, logger="cloudphone.saga")
    calls: list[bool] = []
    saga = Saga("locked_txn")

    @saga.step("RECORD", transactional=True)
    async def record(ctx: StepContext) -> None:
        calls.append(outage_logged(caplog))
        await ctx.session.execute(
            sa.text("INSERT INTO ledger (saga_id) VALUES (:id)"), {"id": ctx.saga_id}
        )

    engine = SagaEngine(
        db,
        [saga],
        worker_id="w-txn",
        lease=timedelta(seconds=10),
        poll_interval=timedelta(milliseconds=50),
    )
    await engine.create_schema()
    other = Database(f"sqlite+aiosqlite:///{tmp_path / 'engine.db'}")
    try:
        async with engine.worker():
            saga_id = await engine.start("locked_txn", {})  # claimed by its insert
            async with other.begin() as conn:  # no await yields before BEGIN IMMEDIATE
                await conn.execute(sa.text("INSERT INTO ledger (saga_id) VALUES ('other')"))
                await eventually(lambda: asyncio.sleep(0, outage_logged(caplog)), bool)
            run = await engine.wait(saga_id, timeout=timedelta(seconds=20))
    finally:
        await other.dispose()
        await engine.close()
    assert run.status is SagaStatus.COMPLETED
    assert calls == [True]  # once, and only after the wait
    assert run.attempt == 1


async def test_a_step_timeout_fires_while_a_long_read_runs(db: Database) -> None:
    """A console-sized read in this process does not hold the loop: the step is cut on time.

    The read (a count over millions of rows, about a second) moves to a thread after its inline
    budget, so the step's 50 ms timeout fires while it still runs.
    """
    running, cut = asyncio.Event(), asyncio.Event()
    read_done = False
    cut_during_read: list[bool] = []
    saga = Saga("hangs")

    @saga.step("WAIT", timeout=timedelta(milliseconds=50))
    async def wait(ctx: StepContext) -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            cut_during_read.append(not read_done)
            cut.set()

    @wait.compensate
    async def undo(ctx: StepContext) -> None:
        return None

    engine = SagaEngine(db, [saga], worker_id="w-read", poll_interval=timedelta(milliseconds=50))
    await engine.create_schema()
    async with engine.worker():
        await engine.start("hangs", {})
        await running.wait()
        async with db.read() as conn:
            total = await conn.scalar(
                sa.text(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                    "WHERE x < 3000000) SELECT count(*) FROM c"
                )
            )
        read_done = True
        await cut.wait()
    await engine.close()
    assert total == 3_000_000
    assert cut_during_read[0]
