"""How late the event loop's timers fire while SQLite runs a long statement.

A long read (a ``WITH RECURSIVE`` count over ``--rows`` rows, about a second here) runs
through the engine's :class:`~cloudphone.saga.store.database.Database` while two things are
due on the same event loop:

- *timer*: an asyncio timer due ``--due`` seconds after the statement starts; its lateness is
  when it ran minus when it was due;
- *step timeout*: a saga step with ``timeout=--due`` that waits forever, driven by the engine's
  worker on the same database; its lateness is when the timeout cut it short minus when it
  was due (the step timeout and the lease heartbeat are timers of this kind).

    python bench/sqlite_stall.py                            # the engine's SQLite driver
    python bench/sqlite_stall.py --driver aiosqlite         # SQLAlchemy's stock aiosqlite
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from cloudphone.saga import Saga, SagaEngine, StepContext
from cloudphone.saga.store.database import Database

LONG = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) "
    "SELECT count(*) FROM c"
)


def database(driver: str) -> Database:
    url = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/stall.db"
    if driver == "inline":
        return Database(url)  # what the engine builds by default
    from cloudphone.saga.store.database import create_sqlite_engine

    return Database(create_sqlite_engine(sa.make_url(url), 30_000, threaded=True))


async def long_read(db: Database, rows: int) -> float:
    started = time.perf_counter()
    async with db.read() as conn:
        await conn.scalar(sa.text(LONG), {"n": rows})
    return time.perf_counter() - started


async def timer_late(db: Database, rows: int, due: float) -> tuple[float, float]:
    """(statement seconds, timer lateness in seconds)."""
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    done = asyncio.Event()
    at = loop.time() + due

    def fire() -> None:
        fired.append(loop.time())
        done.set()

    loop.call_at(at, fire)
    seconds = await long_read(db, rows)
    await done.wait()
    return seconds, fired[0] - at


async def step_timeout_late(db: Database, rows: int, due: float) -> tuple[float, float]:
    """(statement seconds, step-timeout lateness in seconds)."""
    loop = asyncio.get_running_loop()
    began: list[float] = []
    cut: list[float] = []
    running, ended = asyncio.Event(), asyncio.Event()
    saga = Saga("stall")

    @saga.step("WAIT", timeout=timedelta(seconds=due))
    async def wait(ctx: StepContext) -> None:
        began.append(loop.time())
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            cut.append(loop.time())
            ended.set()

    @wait.compensate
    async def undo(ctx: StepContext) -> None:
        return None

    engine = SagaEngine(db, [saga], worker_id="stall", poll_interval=timedelta(milliseconds=20))
    await engine.create_schema()
    async with engine.worker():
        await engine.start("stall", {})
        await running.wait()
        seconds = await long_read(db, rows)
        await ended.wait()
    await engine.close()
    return seconds, cut[0] - (began[0] + due)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--driver", choices=["inline", "aiosqlite"], default="inline")
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--due", type=float, default=0.05, help="seconds after the start")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("cloudphone").setLevel(logging.CRITICAL)  # the cut attempts' lines
    db = database(args.driver)
    results: dict[str, list[tuple[float, float]]] = {"timer": [], "step timeout": []}
    try:
        for _ in range(args.rounds):
            results["timer"].append(await timer_late(db, args.rows, args.due))
            results["step timeout"].append(await step_timeout_late(db, args.rows, args.due))
    finally:
        await db.engine.dispose()
    print(
        f"driver={args.driver} rows={args.rows} due={args.due * 1000:.0f} ms rounds={args.rounds}"
    )
    for name, pairs in results.items():
        seconds = [s for s, _ in pairs]
        late: list[Any] = [lateness * 1000 for _, lateness in pairs]
        print(
            f"  {name}: statement median {statistics.median(seconds) * 1000:.0f} ms; "
            f"fired late by median {statistics.median(late):.1f} ms, "
            f"max {max(late):.1f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
