"""A plain step's success rides with the next transactional step's commit.

When a plain step is followed by a transactional one that runs at once, the plain step's
success is not a write of its own: the transactional step's transaction records both, so a
saga T1 → S2 → T3 → S4 costs the insert and four writes... minus one. What must hold: the
plain step's output and events are stored exactly as before, in order; a transactional step
that fails still records the plain step's success; a graceful stop between the two writes
the plain step's success before the run is handed back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from cloudphone.saga import EventKind, NonRetryableError, Saga, SagaEngine, SagaStatus, StepContext
from tests.support.waiting import eventually

WAIT = timedelta(seconds=20)


@dataclass
class Plan:
    fail_t3: bool = False
    s2_gate: asyncio.Event | None = None
    s2_running: asyncio.Event = field(default_factory=asyncio.Event)
    seen_by_t3: list[Any] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)


def four_steps(name: str, table: str, plan: Plan) -> Saga:
    """T1 (writes a row) → S2 (plain) → T3 (writes a row, reads S2's output) → S4 (plain)."""
    saga = Saga(name)

    async def write(ctx: StepContext, step: str) -> None:
        await ctx.session.execute(
            sa.text(f"INSERT INTO {table} (run_id, step) VALUES (:run, :step)"),
            {"run": ctx.saga_id, "step": step},
        )

    @saga.step("T1", transactional=True)
    async def t1(ctx: StepContext) -> dict[str, Any]:
        plan.ran.append("T1")
        await write(ctx, "T1")
        return {"t1": 1}

    @t1.compensate(transactional=True)
    async def undo_t1(ctx: StepContext) -> None:
        plan.ran.append("undo T1")
        await ctx.session.execute(
            sa.text(f"DELETE FROM {table} WHERE run_id = :run"), {"run": ctx.saga_id}
        )

    @saga.step("S2")
    async def s2(ctx: StepContext) -> dict[str, Any]:
        plan.ran.append("S2")
        plan.s2_running.set()
        if plan.s2_gate is not None:
            await plan.s2_gate.wait()
        return {"s2": "called"}

    @s2.compensate()
    async def undo_s2(ctx: StepContext) -> None:
        plan.ran.append("undo S2")

    @saga.step("T3", transactional=True)
    async def t3(ctx: StepContext) -> dict[str, Any]:
        plan.ran.append("T3")
        plan.seen_by_t3.append(ctx.data.get("s2"))
        await write(ctx, "T3")
        if plan.fail_t3:
            raise NonRetryableError("T3 refuses")
        return {"t3": 3}

    @t3.compensate(transactional=True)
    async def undo_t3(ctx: StepContext) -> None:
        plan.ran.append("undo T3")

    @saga.step("S4")
    async def s4(ctx: StepContext) -> None:
        plan.ran.append("S4")

    return saga


@pytest.fixture
def table(unique: str) -> str:
    return f"carry_rows_{unique}"


async def staged(make: Callable[..., SagaEngine], saga: Saga, table: str) -> SagaEngine:
    engine = make([saga])
    await engine.create_schema()
    async with engine.db.begin() as conn:
        await conn.execute(sa.text(f"CREATE TABLE {table} (run_id text, step text)"))
    return engine


async def events_of(engine: SagaEngine, run_id: str) -> list[tuple[EventKind, str | None]]:
    return [(e.kind, e.step) for e in await engine.history(run_id)]


async def transactions(engine: SagaEngine, run_id: str) -> dict[tuple[str, str | None], str]:
    """PostgreSQL: the transaction (xmin) that wrote each of the run's events."""
    async with engine.db.read() as conn:
        rows = await conn.execute(
            sa.text("SELECT kind, step, xmin::text FROM saga_events WHERE saga_id = :id"),
            {"id": run_id},
        )
        return {(kind, step): xmin for kind, step, xmin in rows}


async def test_the_plain_steps_success_commits_with_the_next_transactional_step(
    make_engine: Callable[..., SagaEngine], unique: str, table: str
) -> None:
    plan = Plan()
    engine = await staged(make_engine, four_steps(f"carry_{unique}", table, plan), table)
    async with engine.worker():
        run_id = await engine.start(f"carry_{unique}", {})
        run = await engine.wait(run_id, timeout=WAIT)

    assert run.status is SagaStatus.COMPLETED
    assert run.outputs == {"T1": {"t1": 1}, "S2": {"s2": "called"}, "T3": {"t3": 3}, "S4": None}
    assert plan.seen_by_t3 == ["called"]
    assert plan.ran == ["T1", "S2", "T3", "S4"]
    succeeded = (EventKind.STEP_SUCCEEDED,)
    assert await events_of(engine, run_id) == [
        (EventKind.SAGA_STARTED, None),
        *((kind, step) for step in ("T1", "S2", "T3", "S4") for kind in succeeded),
        (EventKind.SAGA_COMPLETED, None),
    ]
    stored = await engine.get(run_id)
    assert stored.outputs == run.outputs
    if engine.db.is_postgres:
        xmin = await transactions(engine, run_id)
        done = EventKind.STEP_SUCCEEDED.value
        assert xmin[(done, "S2")] == xmin[(done, "T3")], "S2's success rode with T3's commit"
        assert len({xmin[(done, "T1")], xmin[(done, "T3")], xmin[(done, "S4")]}) == 3
        async with engine.db.read() as conn:
            t3_row = await conn.scalar(
                sa.text(f"SELECT xmin::text FROM {table} WHERE run_id = :r AND step = 'T3'"),
                {"r": run_id},
            )
        assert t3_row == xmin[(done, "T3")], "T3's business row commits with both"


async def test_a_failing_transactional_step_still_records_the_plain_steps_success(
    make_engine: Callable[..., SagaEngine], unique: str, table: str
) -> None:
    """T3 refuses (its row rolls back); the failure's write carries S2's success; all undone."""
    plan = Plan(fail_t3=True)
    engine = await staged(make_engine, four_steps(f"carry_{unique}", table, plan), table)
    async with engine.worker():
        run_id = await engine.start(f"carry_{unique}", {})
        run = await engine.wait(run_id, timeout=WAIT)

    assert run.status is SagaStatus.COMPENSATED
    assert run.outputs["S2"] == {"s2": "called"}
    assert plan.ran == ["T1", "S2", "T3", "undo T3", "undo S2", "undo T1"]
    events = await events_of(engine, run_id)
    assert events[:4] == [
        (EventKind.SAGA_STARTED, None),
        (EventKind.STEP_SUCCEEDED, "T1"),
        (EventKind.STEP_SUCCEEDED, "S2"),
        (EventKind.STEP_FAILED, "T3"),
    ]
    async with engine.db.read() as conn:
        left = await conn.scalar(sa.text(f"SELECT count(*) FROM {table}"))
    assert left == 0
    if engine.db.is_postgres:
        xmin = await transactions(engine, run_id)
        s2_done = xmin[(EventKind.STEP_SUCCEEDED.value, "S2")]
        assert s2_done == xmin[(EventKind.STEP_FAILED.value, "T3")]


async def test_a_graceful_stop_writes_the_plain_steps_success_before_handing_back(
    make_engine: Callable[..., SagaEngine], unique: str, table: str
) -> None:
    """The worker stops while S2 runs: S2 finishes, its success is written, T3 never starts."""
    plan = Plan(s2_gate=asyncio.Event())
    engine = await staged(make_engine, four_steps(f"carry_{unique}", table, plan), table)
    name = f"carry_{unique}"
    async with engine.worker() as worker:
        run_id = await engine.start(name, {})
        await asyncio.wait_for(plan.s2_running.wait(), WAIT.total_seconds())
        stopping = asyncio.create_task(worker.stop(timedelta(seconds=10)))

        async def told_to_stop() -> bool:
            # The runner was told to stop after its attempt (Worker.stop's first act on it).
            return all(runner._stop_after_step for runner, _task in worker._runners.values())

        await eventually(told_to_stop, bool, what="the runner told to stop after S2")
        plan.s2_gate.set()
        await stopping
    stored = await engine.get(run_id)
    assert (stored.status, stored.current_step, stored.owner) == (SagaStatus.RUNNING, "T3", None)
    assert stored.outputs["S2"] == {"s2": "called"}
    assert plan.ran == ["T1", "S2"]
    assert (await events_of(engine, run_id))[-1] == (EventKind.STEP_SUCCEEDED, "S2")

    async with engine.worker():
        run = await engine.wait(run_id, timeout=WAIT)
    assert run.status is SagaStatus.COMPLETED
    assert plan.ran == ["T1", "S2", "T3", "S4"], "S2 did not run again"


async def test_with_carrying_off_every_success_is_its_own_write(
    make_engine: Callable[..., SagaEngine], unique: str, table: str
) -> None:
    """``carry_plain_steps=False``: the same history and outputs, S2 in a transaction alone."""
    plan = Plan()
    saga = four_steps(f"carry_{unique}", table, plan)
    engine = make_engine([saga], carry_plain_steps=False)
    await engine.create_schema()
    async with engine.db.begin() as conn:
        await conn.execute(sa.text(f"CREATE TABLE {table} (run_id text, step text)"))
    async with engine.worker():
        run = await engine.wait(await engine.start(saga.name, {}), timeout=WAIT)
    assert run.status is SagaStatus.COMPLETED
    assert run.outputs["S2"] == {"s2": "called"}
    if engine.db.is_postgres:
        xmin = await transactions(engine, run.id)
        done = EventKind.STEP_SUCCEEDED.value
        assert len({xmin[(done, step)] for step in ("T1", "S2", "T3", "S4")}) == 4
