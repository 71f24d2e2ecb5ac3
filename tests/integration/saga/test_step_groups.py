"""PostgreSQL step groups: several runs' transactional steps in one transaction.

Each test holds a group open (the first member's body waits until every run has joined), so
the members share one transaction for sure; the window is widened so that a loaded machine
cannot split them. What must hold: each step's business row commits exactly once, with its
progress; a member that fails, is cancelled, times out, is fenced, or loses the connection
takes nobody else's writes with it, and the others finish as if they had run alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from cloudphone.saga import (
    EventKind,
    NonRetryableError,
    RetryPolicy,
    Saga,
    SagaEngine,
    SagaStatus,
    StepContext,
)
from cloudphone.saga.store import step_group
from cloudphone.saga.store.sql import SqlStore
from tests.conftest import ENGINE_DEFAULTS
from tests.support.waiting import eventually

RUNS = 8
WAIT = timedelta(seconds=20)


@dataclass
class Plan:
    """What the members do; each trick fires once (a re-run attempt then goes through)."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    fail: set[int] = field(default_factory=set)
    hang: set[int] = field(default_factory=set)
    kill_connection: set[int] = field(default_factory=set)
    own_transaction: set[int] = field(default_factory=set)
    claim_then_fail_alone: set[int] = field(default_factory=set)
    refuse_if_claimed: set[int] = field(default_factory=set)
    bodies: list[int] = field(default_factory=list)


@dataclass
class Stage:
    engine: SagaEngine
    saga: Saga
    plan: Plan
    table: str

    async def rows(self) -> dict[str, int]:
        async with self.engine.db.read() as conn:
            result = await conn.execute(
                sa.text(f"SELECT run_id, count(*) FROM {self.table} GROUP BY run_id")
            )
            return {str(run): int(n) for run, n in result}

    def metric(self, name: str) -> float:
        return self.engine.metrics.registry.get_sample_value(name) or 0.0

    async def start_group(self) -> list[str]:
        """Start RUNS runs; once all of them wait in one group, let its first member go."""
        ids = [await self.engine.start(self.saga.name, {"i": i}) for i in range(RUNS)]
        groups = self.engine.store.step_groups if isinstance(self.engine.store, SqlStore) else None
        assert groups is not None

        async def gathered() -> int:
            return groups.gathering

        await eventually(gathered, lambda n: n == RUNS, what="every run in one group")
        self.plan.gate.set()
        return ids

    async def finished(self, ids: list[str]) -> dict[int, Any]:
        runs = [await self.engine.wait(run_id, timeout=WAIT) for run_id in ids]
        return dict(enumerate(runs))


@pytest.fixture
async def stage(
    postgres_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stage]:
    monkeypatch.setattr(step_group, "WINDOW", 60.0)
    table = f"group_rows_{unique}"
    plan = Plan()
    saga = Saga(f"groups_{unique}")

    @saga.step(
        "RESERVE",
        transactional=True,
        timeout=timedelta(seconds=2),
        retry=RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=10)),
    )
    async def reserve(ctx: StepContext) -> dict[str, Any]:
        i = ctx.data["i"]
        plan.bodies.append(i)
        await ctx.session.execute(
            sa.text(f"INSERT INTO {table} (run_id, step) VALUES (:run, 'RESERVE')"),
            {"run": ctx.saga_id},
        )
        if i == 0:
            await plan.gate.wait()
        if i in plan.kill_connection:
            plan.kill_connection.discard(i)
            await ctx.session.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        if i in plan.claim_then_fail_alone:
            if plan.bodies.count(i) > 1:
                raise NonRetryableError(f"member {i} fails alone before claiming")
            await ctx.session.execute(
                sa.text(f"INSERT INTO {table} (run_id, step) VALUES ('claim', 'X')")
            )
        if i in plan.refuse_if_claimed:
            claims = await ctx.session.scalar(
                sa.text(f"SELECT count(*) FROM {table} WHERE run_id = 'claim'")
            )
            if claims:
                raise NonRetryableError(f"member {i}: already claimed")
        if i in plan.own_transaction:
            # A write transaction of the step's own (a service call that opens one).
            async with engine.db.begin() as own:
                await own.execute(
                    sa.text(f"INSERT INTO {table} (run_id, step) VALUES (:run, 'OWN')"),
                    {"run": ctx.saga_id},
                )
        if i in plan.hang:
            plan.hang.discard(i)
            await asyncio.Event().wait()  # never set: the step timeout ends it
        if i in plan.fail:
            raise NonRetryableError(f"member {i} refuses")
        return {"reserved": i}

    @reserve.compensate(transactional=True)
    async def release(ctx: StepContext) -> None:
        await ctx.session.execute(
            sa.text(f"DELETE FROM {table} WHERE run_id = :run"), {"run": ctx.saga_id}
        )

    @saga.step("CONFIRM", transactional=True)
    async def confirm(ctx: StepContext) -> None:
        await ctx.session.execute(
            sa.text(f"INSERT INTO {table} (run_id, step) VALUES (:run, 'CONFIRM')"),
            {"run": ctx.saga_id},
        )

    # Started one after another while nothing else is written, each run's first step would
    # take its insert along in a transaction of its own (saga/pending.py), never a group's.
    engine = SagaEngine(
        postgres_url,
        [saga],
        **{**ENGINE_DEFAULTS, "worker_id": f"w-{unique}", "insert_with_first_step": False},
    )
    await engine.create_schema()
    async with engine.db.begin() as conn:
        await conn.execute(sa.text(f"CREATE TABLE {table} (run_id text, step text)"))
    try:
        async with engine.worker(concurrency=RUNS * 2):
            yield Stage(engine, saga, plan, table)
    finally:
        async with engine.db.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE {table}"))
        await engine.close()


def attempts_of(events: list[Any], step: str) -> list[tuple[EventKind, int | None]]:
    return [(e.kind, e.attempt) for e in events if e.step == step]


async def test_steps_of_many_runs_share_one_transaction(stage: Stage) -> None:
    """Every run's RESERVE commits in one transaction; each row exactly once, with its run."""
    ids = await stage.start_group()
    runs = await stage.finished(ids)

    assert {run.status for run in runs.values()} == {SagaStatus.COMPLETED}
    assert await stage.rows() == dict.fromkeys(ids, 2)
    async with stage.engine.db.read() as conn:
        reserve_txns = await conn.scalar(
            sa.text(f"SELECT count(DISTINCT xmin::text) FROM {stage.table} WHERE step='RESERVE'")
        )
    assert reserve_txns == 1
    assert sorted(stage.plan.bodies) == list(range(RUNS)), "no body ran twice"
    assert stage.metric("saga_step_group_reruns_total") == 0
    assert stage.metric("saga_step_group_members_sum") >= RUNS * 2
    for run_id in ids:
        events = await stage.engine.history(run_id)
        assert attempts_of(events, "RESERVE") == [(EventKind.STEP_SUCCEEDED, 1)]


async def test_a_failing_member_takes_no_one_else_with_it(stage: Stage) -> None:
    """Member 3 writes its row, then fails: the group rolls back, the others re-run alone."""
    stage.plan.fail.add(3)
    ids = await stage.start_group()
    runs = await stage.finished(ids)

    assert runs[3].status is SagaStatus.COMPENSATED
    assert {runs[i].status for i in range(RUNS) if i != 3} == {SagaStatus.COMPLETED}
    assert stage.plan.bodies.count(0) == 2, "member 0 ran in the group, then again alone"
    assert stage.plan.bodies.count(3) == 2, "member 3 failed in the group, then again alone"
    assert stage.metric("saga_step_group_reruns_total") == RUNS, "each RESERVE ran again"
    rows = await stage.rows()
    assert ids[3] not in rows
    assert rows == {ids[i]: 2 for i in range(RUNS) if i != 3}
    for i, run_id in enumerate(ids):
        events = await stage.engine.history(run_id)
        if i == 3:
            assert (EventKind.STEP_FAILED, 1) in attempts_of(events, "RESERVE")
        else:
            # Re-run alone as the same attempt: nothing in the history of a shared rollback.
            assert attempts_of(events, "RESERVE") == [(EventKind.STEP_SUCCEEDED, 1)]


async def test_a_member_that_times_out_rolls_back_alone(stage: Stage) -> None:
    """Member 5 hangs until its step timeout: the group rolls back, everyone runs alone."""
    stage.plan.hang.add(5)
    ids = await stage.start_group()
    runs = await stage.finished(ids)

    assert {run.status for run in runs.values()} == {SagaStatus.COMPLETED}
    assert await stage.rows() == dict.fromkeys(ids, 2)
    assert stage.plan.bodies.count(0) == 2, "member 0 ran in the group, then again alone"
    assert stage.plan.bodies.count(5) == 2, "member 5 timed out in the group, then ran alone"
    for run_id in ids:
        events = await stage.engine.history(run_id)
        assert attempts_of(events, "RESERVE") == [(EventKind.STEP_SUCCEEDED, 1)]


async def test_a_member_never_fails_on_writes_that_did_not_commit(stage: Stage) -> None:
    """Member 2 refuses when it sees member 1's claim, which member 1 never commits.

    In the group member 2 sees member 1's uncommitted claim and refuses; the group rolls
    back, and both run again alone: member 1 fails there before claiming, so the claim never
    existed, and member 2, deciding on committed data only, completes.
    """
    stage.plan.claim_then_fail_alone.add(1)
    stage.plan.refuse_if_claimed.add(2)
    ids = await stage.start_group()
    runs = await stage.finished(ids)

    assert runs[1].status is SagaStatus.COMPENSATED
    assert runs[2].status is SagaStatus.COMPLETED
    assert "claim" not in await stage.rows()
    assert stage.plan.bodies.count(2) == 2, "member 2 refused in the group, then ran alone"
    events = await stage.engine.history(ids[2])
    assert attempts_of(events, "RESERVE") == [(EventKind.STEP_SUCCEEDED, 1)]


async def test_a_member_cancelled_by_an_operator_mid_group(stage: Stage) -> None:
    """A cancel request moves one run's last_seq while its step waits in the group.

    The group's progress write is fenced for that run, so the whole group rolls back; the
    others commit alone, and the cancelled run records its step, then compensates.
    """
    ids = [await stage.engine.start(stage.saga.name, {"i": i}) for i in range(RUNS)]
    groups = stage.engine.store.step_groups if isinstance(stage.engine.store, SqlStore) else None
    assert groups is not None

    async def gathered() -> int:
        return groups.gathering

    await eventually(gathered, lambda n: n == RUNS, what="every run in one group")
    await stage.engine.cancel(ids[2])
    stage.plan.gate.set()
    runs = await stage.finished(ids)

    assert runs[2].status is SagaStatus.COMPENSATED
    assert {runs[i].status for i in range(RUNS) if i != 2} == {SagaStatus.COMPLETED}
    assert stage.plan.bodies.count(0) == 2, "member 0 ran in the group, then again alone"
    rows = await stage.rows()
    assert rows == {ids[i]: 2 for i in range(RUNS) if i != 2}


async def test_the_connection_dies_under_the_group(stage: Stage) -> None:
    """Member 4 kills the group's connection: every member re-runs; each row exactly once."""
    stage.plan.kill_connection.add(4)
    ids = await stage.start_group()
    runs = await stage.finished(ids)

    assert {run.status for run in runs.values()} == {SagaStatus.COMPLETED}
    assert await stage.rows() == dict.fromkeys(ids, 2)
    assert stage.plan.bodies.count(4) == 2, "member 4 ran in the group, then again"
    for run_id in ids:
        events = await stage.engine.history(run_id)
        assert attempts_of(events, "RESERVE") == [(EventKind.STEP_SUCCEEDED, 1)]


async def test_a_member_opening_its_own_transaction_runs_alone(stage: Stage) -> None:
    """Member 6 opens a write transaction of its own: it could wait on a lock of the group's.

    It is not allowed to, in the group: the group rolls back and member 6 runs again alone,
    where its own transaction commits as it would without groups.
    """
    stage.plan.own_transaction.add(6)
    ids = await stage.start_group()
    runs = await stage.finished(ids)

    assert {run.status for run in runs.values()} == {SagaStatus.COMPLETED}
    rows = await stage.rows()
    assert rows == {run_id: 3 if i == 6 else 2 for i, run_id in enumerate(ids)}
    assert stage.plan.bodies.count(6) == 2, "member 6 ran in the group, then alone"
    for run_id in ids:
        events = await stage.engine.history(run_id)
        assert attempts_of(events, "RESERVE") == [(EventKind.STEP_SUCCEEDED, 1)]


async def test_step_group_sizes(postgres_url: str) -> None:
    """1 turns the groups off; less than 1 is refused, not taken for the default."""
    off = SagaEngine(postgres_url, [], step_group=1)
    try:
        assert isinstance(off.store, SqlStore)
        assert off.store.step_groups is None
    finally:
        await off.close()
    with pytest.raises(ValueError, match="step_group must be 1"):
        SagaEngine(postgres_url, [], step_group=0)
