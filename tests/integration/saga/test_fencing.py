"""Fencing: a worker whose lease was taken over can no longer write a run's progress."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cloudphone.saga import EventKind, Saga, SagaEngine, SagaStatus, StepContext
from cloudphone.saga.decide import on_step_success
from cloudphone.saga.errors import LeaseLostError
from cloudphone.saga.progress import Progress, state_of
from cloudphone.saga.store.base import ClaimRequest
from cloudphone.saga.testing import ManualClock
from tests.support.chaos import (
    build_chaos_saga,
    chaos_effects,
    count_effects,
    create_chaos_schema,
    effect_writers,
)
from tests.support.waiting import eventually

LEASE = timedelta(seconds=5)


async def write_step(
    engine: SagaEngine, run_id: str, epoch: int, progress: Progress, worker_id: str
) -> None:
    """What a transactional RESERVE does: its business row and its progress, one transaction."""
    async with engine.store.step_transaction() as tx:
        await tx.session.execute(
            sa.insert(chaos_effects).values(saga_id=run_id, step="RESERVE", worker_id=worker_id)
        )
        await tx.commit(run_id, epoch, progress)


async def test_taken_over_worker_cannot_commit_progress_or_transactional_writes(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """After B takes over A's expired lease, A's commit and A's step transaction are refused."""
    clock = ManualClock()
    saga = build_chaos_saga(f"fence_{unique}")
    engine = make_engine([saga], clock=clock, lease=LEASE)
    await create_chaos_schema(engine.db)
    store, a_id, b_id = engine.store, f"a-{unique}", f"b-{unique}"
    run_id = await engine.start(saga.name, {"n": 1})

    (a,) = await store.claim(ClaimRequest(a_id, 1, [saga.name], clock.now()))
    assert (a.previous_owner, a.run.owner, a.run.attempt) == (None, a_id, 1)
    clock.advance(LEASE - timedelta(milliseconds=1))
    assert await store.claim(ClaimRequest(b_id, 1, [saga.name], clock.now())) == [], (
        "lease still held"
    )
    clock.advance(timedelta(milliseconds=2))
    (b,) = await store.claim(ClaimRequest(b_id, 1, [saga.name], clock.now()))

    assert b.previous_owner == a_id
    assert (b.run.owner, b.run.epoch, b.run.attempt) == (b_id, a.run.epoch + 1, a.run.attempt + 1)
    before = await engine.history(run_id)
    assert (before[-1].kind, before[-1].step, before[-1].attempt) == (
        EventKind.LEASE_TAKEOVER,
        "RESERVE",
        2,
    )
    assert before[-1].detail == {"previous_owner": a_id, "worker": b_id}

    # A, unaware, finishes its attempt of RESERVE and records it at its old epoch.
    stale = on_step_success(
        state_of(a.run, saga), saga, {"RESERVE": a_id}, clock.now(), clock.now()
    )
    with pytest.raises(LeaseLostError):
        await store.commit(run_id, a.run.epoch, stale)
    with pytest.raises(LeaseLostError):
        await write_step(engine, run_id, a.run.epoch, stale, a_id)

    assert await count_effects(engine.db, [run_id]) == Counter(), "A's business row survived"
    assert await store.heartbeat(a_id, [run_id]) == {}, "A renewed B's lease"
    run = await engine.get(run_id)
    assert (run.owner, run.epoch, run.status) == (b_id, b.run.epoch, SagaStatus.RUNNING)
    assert (run.current_step, run.attempt, run.data) == ("RESERVE", 2, {"n": 1})
    assert await engine.history(run_id) == before

    # The same write at the current epoch goes through, business row and progress together.
    fresh = on_step_success(
        state_of(b.run, saga), saga, {"RESERVE": b_id}, clock.now(), clock.now()
    )
    await write_step(engine, run_id, b.run.epoch, fresh, b_id)
    assert await effect_writers(engine.db, run_id) == {"RESERVE": [b_id]}
    run = await engine.get(run_id)
    assert (run.current_step, run.data) == ("CALL", {"n": 1, "RESERVE": b_id})
    assert (await engine.history(run_id))[-1].kind is EventKind.STEP_SUCCEEDED


async def test_long_transactional_step_does_not_cost_other_runs_their_lease(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A transactional step outlasting the lease does not make the worker take over its others."""
    lease = timedelta(seconds=1)
    calls: list[int] = []
    call_started, finish_call = asyncio.Event(), asyncio.Event()
    long_tx = Saga(f"long_tx_{unique}")

    @long_tx.step("HOLD", transactional=True)
    async def hold(ctx: StepContext) -> None:
        await ctx.session.execute(sa.text("SELECT 1"))
        # Simulated work that keeps the step's transaction open for 2.5 leases.
        await asyncio.sleep(2.5 * lease.total_seconds())

    slow = Saga(f"slow_call_{unique}")

    @slow.step("CALL")
    async def call(ctx: StepContext) -> None:
        calls.append(ctx.attempt)
        call_started.set()
        await finish_call.wait()

    engine = make_engine([long_tx, slow], lease=lease)
    await engine.create_schema()
    async with engine.worker(concurrency=4):
        slow_id = await engine.start(slow.name, {})
        await asyncio.wait_for(call_started.wait(), timeout=10)
        tx_id = await engine.start(long_tx.name, {})
        tx_run = await engine.wait(tx_id, timeout=timedelta(seconds=15))
        assert tx_run.status is SagaStatus.COMPLETED
        assert tx_run.finished_at is not None
        # Keep CALL running until its lease was written again after the long transaction
        # (renewed by the heartbeat, or taken over).
        renewed_after = tx_run.finished_at + lease
        await eventually(
            lambda: engine.get(slow_id),
            lambda run: run.lease_expires_at is not None and run.lease_expires_at > renewed_after,
            what="CALL's lease written after the long transaction",
        )
        finish_call.set()
        assert (
            await engine.wait(slow_id, timeout=timedelta(seconds=15))
        ).status is SagaStatus.COMPLETED

    events = await engine.history(slow_id)
    assert [e for e in events if e.kind is EventKind.LEASE_TAKEOVER] == []
    assert calls == [1], "the healthy CALL attempt was abandoned and run again"
