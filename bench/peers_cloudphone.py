"""cloudphone in ``bench/peers.py``: a ``SagaEngine`` and its worker in the child process.

The engine is built directly (no ``platform.py``): it is the engine being compared. T1 and T3
are transactional steps; in the ``write`` shape each INSERTs its business row through
``ctx.session``, in the transaction that records the step (exactly once). The clients call
``engine.start()`` then ``engine.wait()``; the worker in the same process claims each run by
its insert.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from peers_common import BUSINESS_DDL, BUSINESS_TABLE, Cell, CellResult, measured, timed_async
from peers_common import wait_timeout as engine_wait_timeout

from cloudphone.saga import Saga, SagaEngine, SagaStatus, StepContext

INSERT = sa.text(f"INSERT INTO {BUSINESS_TABLE} (run_id, step) VALUES (:run, :step)")
WAIT_SECONDS = 120.0


def build_saga(shape: str, via: str = "session") -> Saga:
    """T1 (transactional) → S2 → T3 (transactional) → S4.

    In ``write`` the INSERT goes through ``ctx.session`` (``via="session"``: sent at once) or
    ``ctx.write`` (``via="write"``: sent with the step's progress record).
    """
    write = shape == "write"
    saga = Saga(f"peers_{shape}")

    async def business_write(ctx: StepContext) -> None:
        if write and via == "write":
            ctx.write(INSERT, {"run": ctx.saga_id, "step": ctx.step})
        elif write:
            await ctx.session.execute(INSERT, {"run": ctx.saga_id, "step": ctx.step})

    @saga.step("T1", transactional=True)
    async def t1(ctx: StepContext) -> dict[str, Any]:
        await business_write(ctx)
        return {"t1": ctx.data["i"]}

    @saga.step("S2")
    async def s2(ctx: StepContext) -> dict[str, Any]:
        return {"s2": ctx.idempotency_key}

    @saga.step("T3", transactional=True)
    async def t3(ctx: StepContext) -> None:
        await business_write(ctx)

    @saga.step("S4")
    async def s4(ctx: StepContext) -> None:
        return None

    return saga


async def prepare(url: str) -> None:
    """The engine's tables and the business table (before any cell counts transactions)."""
    engine = SagaEngine(url, [])
    try:
        await engine.create_schema()
        async with engine.db.begin() as conn:
            await conn.execute(sa.text(BUSINESS_DDL))
    finally:
        await engine.close()


async def run_cell(cell: Cell) -> CellResult:
    """Warm up, then time ``cell.sagas`` sagas at ``cell.concurrency`` in flight."""
    saga = build_saga(cell.shape, cell.options.get("write_via", "session"))
    # A slot per client, plus room for a run whose slot is still being released when its
    # client starts the next one (that start would miss the claim by insert).
    slots = cell.concurrency + int(cell.options.get("worker_slack", 0))
    with measured(cell) as meter:
        engine = SagaEngine(
            cell.url,
            [saga],
            worker_id=f"peers-{os.getpid()}",
            step_group=cell.options.get("step_group"),
        )
        timeout = engine_wait_timeout(engine.wait, WAIT_SECONDS)

        async def one(i: int) -> None:
            saga_id = await engine.start(saga.name, {"i": i})
            run = await engine.wait(saga_id, timeout=timeout)
            if run.status is not SagaStatus.COMPLETED:
                raise RuntimeError(f"saga {saga_id} ended {run.status.value}: {run.error}")

        try:
            async with engine.worker(concurrency=slots):
                timing = await timed_async(cell, meter, one)
        finally:
            await engine.close()
        return meter.result(timing)


async def run_cells(cells: list[Cell]) -> list[CellResult]:
    """Every cell of one child, in order (the schema first, once per database)."""
    for url in dict.fromkeys(cell.url for cell in cells):
        await prepare(url)
    return [await run_cell(cell) for cell in cells]
