"""MemoryEngine: the engine on the memory store, moved by a ManualClock; faults and crashes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloudphone.saga import (
    Database,
    EventKind,
    NonRetryableError,
    RetryPolicy,
    Saga,
    SagaDefinitionError,
    SagaEngine,
    SagaNotFoundError,
    SagaStatus,
    StepContext,
)
from cloudphone.saga.ports import SystemClock
from cloudphone.saga.store.memory import MemoryStore
from cloudphone.saga.testing import Boundary, ManualClock, MemoryEngine
from tests.support.sagas import FAST, Recorder, build_saga

effects_metadata = sa.MetaData()
effects = sa.Table(
    "effects",
    effects_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("saga_id", sa.String(36), nullable=False),
)


@pytest.fixture
async def business(tmp_path: Path) -> AsyncIterator[Database]:
    """A business database with one table (a SQLite file of this test)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'business.db'}")
    async with db.begin() as conn:
        await conn.run_sync(effects_metadata.create_all)
    yield db
    await db.dispose()


async def count_effects(db: Database, saga_id: str) -> int:
    async with db.read() as conn:
        n = await conn.scalar(sa.select(sa.func.count()).where(effects.c.saga_id == saga_id))
    return int(n or 0)


def keyed_saga(keys: list[tuple[str, int, str]], *, transactional: bool = False) -> Saga:
    """A→B(pivot)→C; B records (step, attempt, idempotency key) and, if asked, writes a row."""
    saga = Saga("keyed", retry=FAST)

    @saga.step("A")
    async def a(ctx: StepContext) -> None:
        keys.append(("A", ctx.attempt, ctx.idempotency_key))

    @saga.step("B", pivot=True, transactional=transactional)
    async def b(ctx: StepContext) -> dict[str, Any]:
        keys.append(("B", ctx.attempt, ctx.idempotency_key))
        if transactional:
            await ctx.session.execute(sa.insert(effects).values(saga_id=ctx.saga_id))
        return {"b": ctx.attempt}

    @saga.step("C")
    async def c(ctx: StepContext) -> None:
        keys.append(("C", ctx.attempt, ctx.idempotency_key))

    return saga


async def test_a_saga_runs_to_completion_without_a_database() -> None:
    recorder = Recorder()
    engine = MemoryEngine([build_saga("plain", recorder)])
    async with engine.worker():
        saga_id = await engine.start("plain", {"n": 1})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=5))
    assert (run.status, run.data) == (SagaStatus.COMPLETED, {"n": 1, "A": 1, "B": 1, "C": 1})
    assert recorder.calls == ["A", "B", "C"]
    kinds = [e.kind for e in await engine.history(saga_id)]
    assert kinds[0] is EventKind.SAGA_STARTED
    assert kinds[-1] is EventKind.SAGA_COMPLETED
    assert [r.id for r in await engine.list(status=SagaStatus.COMPLETED)] == [saga_id]


async def test_a_retry_comes_due_only_when_the_clock_reaches_it() -> None:
    recorder = Recorder()
    engine = MemoryEngine([build_saga("retried", recorder)])
    engine.faults.fail("B", times=1)
    async with engine.worker():
        saga_id = await engine.start("retried", {})
        await engine.settle()
        waiting = await engine.get(saga_id)
        assert (waiting.status, waiting.current_step, waiting.attempt) == (
            SagaStatus.RUNNING,
            "B",
            2,
        )
        await engine.advance(FAST.initial_interval - timedelta(microseconds=1))
        assert engine.faults.attempts("B") == 1, "the retry ran before its time"
        await engine.advance(timedelta(microseconds=1))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert recorder.calls == ["A", "B", "C"]


async def test_a_deadline_passing_on_the_clock_compensates_a_hanging_step() -> None:
    recorder = Recorder()
    saga = build_saga("late", recorder, timeout=timedelta(minutes=5))
    engine = MemoryEngine([saga])
    engine.faults.hang("B")
    async with engine.worker():
        saga_id = await engine.start("late", {})
        await engine.advance(timedelta(minutes=4))
        assert (await engine.get(saga_id)).status is SagaStatus.RUNNING
        await engine.advance(timedelta(minutes=1))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.TIMED_OUT
    assert recorder.undone() == ["B", "A"]
    kinds = [e.kind for e in await engine.history(saga_id)]
    assert EventKind.DEADLINE_EXCEEDED in kinds


async def test_a_step_timeout_fires_on_the_clock_and_the_step_is_retried() -> None:
    recorder = Recorder()
    saga = build_saga("slow", recorder, step_timeout={"B": timedelta(seconds=30)})
    engine = MemoryEngine([saga])
    engine.faults.hang("B")
    async with engine.worker():
        saga_id = await engine.start("slow", {})
        await engine.advance(timedelta(seconds=29))
        assert engine.faults.attempts("B") == 1
        await engine.advance(timedelta(seconds=1))  # times out; the retry is due 10 ms later
        await engine.advance(FAST.initial_interval)
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPLETED
    failure = next(e for e in await engine.history(saga_id) if e.kind is EventKind.STEP_FAILED)
    assert failure.detail["error"]["type"] == "StepTimeoutError"


@pytest.mark.parametrize("when", ["before", "after"])
async def test_crash_at_a_step_boundary_is_taken_over_after_the_lease(when: Boundary) -> None:
    """The crashed attempt is lost; another worker takes over; the key stays the same."""
    keys: list[tuple[str, int, str]] = []
    engine = MemoryEngine([keyed_saga(keys)])
    engine.crash_at("B", when)
    async with engine.worker():
        saga_id = await engine.start("keyed", {})
        await engine.settle()
        stuck = await engine.get(saga_id)
        assert (stuck.status, stuck.current_step, stuck.owner) == (
            SagaStatus.RUNNING,
            "B",
            "memory-worker/crashed-1",
        )
        await engine.advance(engine.lease)
        assert (await engine.get(saga_id)).owner == "memory-worker/crashed-1", "lease not over"
        await engine.advance(timedelta(seconds=1))
        run = await engine.get(saga_id)
    assert (run.status, run.data) == (SagaStatus.COMPLETED, {"b": 2})
    b_calls = [(attempt, key) for step, attempt, key in keys if step == "B"]
    ran_before_crash = [(1, f"{saga_id}:B")] if when == "after" else []
    assert b_calls == [*ran_before_crash, (2, f"{saga_id}:B")]
    assert [c.attempt for c in engine.faults.calls if c.step == "B"] == [1, 2]
    takeover = next(e for e in await engine.history(saga_id) if e.kind is EventKind.LEASE_TAKEOVER)
    assert (takeover.step, takeover.attempt) == ("B", 2)
    assert takeover.detail == {
        "previous_owner": "memory-worker/crashed-1",
        "worker": "memory-worker",
    }


async def test_crash_after_a_transactional_step_rolls_its_write_back(business: Database) -> None:
    """The crash loses B's transaction, and with it A's success, which rode with it.

    A (plain) runs again, as the attempt the takeover names; B runs again as attempt 1: its
    first attempt left nothing behind, as when a transaction is lost with the database.
    """
    keys: list[tuple[str, int, str]] = []
    engine = MemoryEngine([keyed_saga(keys, transactional=True)], database=business)
    engine.crash_at("B", "after")
    async with engine.worker():
        saga_id = await engine.start("keyed", {})
        await engine.settle()
        assert await count_effects(business, saga_id) == 0, "a crashed transaction committed"
        await engine.advance(engine.lease + timedelta(seconds=1))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert [(step, attempt) for step, attempt, _ in keys] == [
        ("A", 1),
        ("B", 1),
        ("A", 2),
        ("B", 1),
        ("C", 1),
    ]
    assert await count_effects(business, saga_id) == 1
    takeover = next(e for e in await engine.history(saga_id) if e.kind is EventKind.LEASE_TAKEOVER)
    assert (takeover.step, takeover.attempt) == ("A", 2)


async def test_a_step_that_keeps_killing_its_worker_is_named_with_the_plain_step_before_it(
    business: Database,
) -> None:
    """Each crash in B loses A's success too: A runs out of attempts, and says it may be B."""
    keys: list[tuple[str, int, str]] = []
    engine = MemoryEngine([keyed_saga(keys, transactional=True)], database=business)
    engine.crash_at("B", "after", times=None)
    async with engine.worker():
        saga_id = await engine.start("keyed", {})
        await engine.settle()
        for _ in range(10):
            if (await engine.get(saga_id)).status.is_terminal:
                break
            await engine.advance(engine.lease + timedelta(seconds=1))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert [step for step, _, _ in keys].count("A") == 3, "A ran its three attempts"
    assert await count_effects(business, saga_id) == 0
    failed = next(e for e in await engine.history(saga_id) if e.kind is EventKind.STEP_FAILED)
    assert (failed.step, failed.detail["error"]["type"]) == ("A", "WorkerLostError")
    assert failed.detail["error"]["message"] == (
        "3 attempts of A were lost with their workers (or in B: A's success is written with"
        " B's transaction, so a worker lost in it counts as an attempt of this step)"
    )


async def test_transactional_steps_need_a_business_database() -> None:
    with pytest.raises(SagaDefinitionError, match=r"keyed\.B.*database="):
        MemoryEngine([keyed_saga([], transactional=True)])
    with pytest.raises(RuntimeError, match="no database"):
        _ = MemoryEngine([keyed_saga([])]).db


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_start_joins_the_callers_transaction(business: Database, outcome: str) -> None:
    recorder = Recorder()
    engine = MemoryEngine([build_saga("joined", recorder)], database=business)
    started: list[str] = []
    async with engine.worker():
        with pytest.raises(RuntimeError) if outcome == "rollback" else contextlib.nullcontext():
            async with business.begin() as conn:
                started.append(await engine.start("joined", {}, session=conn))
                await engine.settle()
                assert recorder.calls == [], "the worker ran a run that was not committed"
                if outcome == "rollback":
                    raise RuntimeError("the caller failed")
        if outcome == "rollback":
            with pytest.raises(SagaNotFoundError):
                await engine.get(started[0])
            return
        run = await engine.wait(started[0], timeout=timedelta(seconds=5))
    assert run.status is SagaStatus.COMPLETED


async def test_cancel_reaches_the_owner_at_its_next_lease_renewal_on_the_clock() -> None:
    recorder = Recorder()
    engine = MemoryEngine([build_saga("cancelled", recorder)])
    engine.faults.hang("B")
    async with engine.worker():
        saga_id = await engine.start("cancelled", {})
        await engine.advance(timedelta(0))
        requested = await engine.cancel(saga_id, actor="ops")
        assert requested.cancel_requested
        await engine.advance(engine.lease / 3)  # the heartbeat hears of it
        run = await engine.get(saga_id)
    assert (run.status, run.compensation_cause) == (SagaStatus.COMPENSATED, "cancelled")
    assert recorder.undone() == ["B", "A"]


async def test_operators_retry_and_resolve_failed_runs() -> None:
    recorder = Recorder()
    engine = MemoryEngine([build_saga("ops", recorder, steps=("A", "P", "R"), pivot="P")])
    engine.faults.fail("R", times=2, error=NonRetryableError("misconfigured"))
    async with engine.worker():
        saga_id = await engine.start("ops", {})
        failed = await engine.wait(saga_id, timeout=timedelta(seconds=5))
        assert failed.status is SagaStatus.FAILED
        await engine.retry(saga_id, note="fixed", actor="ops")
        again = await engine.wait(saga_id, timeout=timedelta(seconds=5))
        assert again.status is SagaStatus.FAILED
        resolved = await engine.resolve(saga_id, "refunded by hand", actor="ops")
    assert (resolved.status, resolved.resolution) == (SagaStatus.FAILED, "refunded by hand")
    assert await engine.list(needs_attention=True) == []


async def test_faults_can_aim_at_one_attempt_and_run_any_action() -> None:
    recorder = Recorder()
    engine = MemoryEngine([build_saga("aimed", recorder)])
    engine.faults.fail("A", attempt=2)
    engine.faults.fail("A", attempt=1)
    seen: list[int] = []
    engine.faults.add("C", lambda ctx: seen.append(ctx.attempt), when="after")
    async with engine.worker():
        saga_id = await engine.start("aimed", {})
        await engine.advance(FAST.initial_interval)
        await engine.advance(FAST.initial_interval * 2)
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert [c.attempt for c in engine.faults.calls if c.step == "A"] == [1, 2, 3]
    assert seen == [1]


async def test_settle_waits_for_attempts_in_flight_but_not_for_hung_ones() -> None:
    """A step busy with the outside world keeps settle() waiting; a hung attempt does not."""
    engine = MemoryEngine([build_saga("hangs", Recorder())])
    with pytest.raises(RuntimeError, match="running worker"):
        await engine.settle()
    outside = asyncio.Event()
    busy = Saga("busy")

    @busy.step("WAIT")
    async def wait(ctx: StepContext) -> None:
        await outside.wait()

    engine = MemoryEngine([busy, build_saga("hangs", Recorder())])
    engine.faults.hang("A")
    async with engine.worker():
        busy_id = await engine.start("busy", {})
        hung_id = await engine.start("hangs", {})
        with pytest.raises(TimeoutError, match="1 runs in flight"):
            await engine.settle(timeout=timedelta(milliseconds=50))
        outside.set()
        await engine.settle()
        assert (await engine.get(busy_id)).status is SagaStatus.COMPLETED
        assert engine.faults.hanging == {hung_id}


async def test_advance_needs_a_manual_clock() -> None:
    engine = MemoryEngine([build_saga("real_time", Recorder())], clock=SystemClock())
    with pytest.raises(TypeError, match="ManualClock"):
        await engine.advance(timedelta(seconds=1))


def test_an_engine_takes_a_database_or_a_store_with_its_lease_and_clock() -> None:
    clock = ManualClock()
    store = MemoryStore(clock, timedelta(seconds=5))
    engine = SagaEngine(store=store, sagas=[build_saga("on_store", Recorder())])
    assert (engine.store, engine.lease, engine.clock) == (store, timedelta(seconds=5), clock)
    with pytest.raises(ValueError, match="not both"):
        SagaEngine("sqlite+aiosqlite:///x.db", store=store)
    with pytest.raises(ValueError, match="needs a database"):
        SagaEngine()
    with pytest.raises(ValueError, match="differs from the store"):
        SagaEngine(store=store, lease=timedelta(seconds=6))
    with pytest.raises(ValueError, match="clock differs"):
        SagaEngine(store=store, clock=ManualClock())


async def test_advance_lets_time_pass_with_each_retry_at_its_own_time() -> None:
    """One advance of 10 s: the 4 attempts of a step failing each time run at 0, 1, 3 and 7 s."""
    every_second = RetryPolicy(max_attempts=4, initial_interval=timedelta(seconds=1), jitter=False)
    recorder = Recorder()
    engine = MemoryEngine([build_saga("patient", recorder, retry=every_second)])
    engine.faults.fail("B", times=None)
    async with engine.worker():
        saga_id = await engine.start("patient", {})
        start = engine.clock.now()
        await engine.advance(timedelta(seconds=10))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    failures = [e.at for e in await engine.history(saga_id) if e.kind is EventKind.STEP_FAILED]
    assert [(at - start).total_seconds() for at in failures] == [0, 1, 3, 7]
    assert engine.clock.now() == start + timedelta(seconds=10)
