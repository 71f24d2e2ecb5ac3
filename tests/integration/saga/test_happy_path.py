"""Happy path: steps in order, outputs merged, COMPLETED, complete history, metrics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from cloudphone.saga import EventKind, Saga, SagaEngine, SagaStatus, StepContext
from tests.support.sagas import Recorder, build_saga


async def test_steps_run_in_order_and_outputs_merge(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Each step sees the input plus earlier outputs; the run ends COMPLETED with all data."""
    seen: list[dict[str, object]] = []
    saga = Saga(f"happy_{unique}")

    @saga.step("RESERVE", transactional=True)
    async def reserve(ctx: StepContext) -> dict[str, object]:
        seen.append(dict(ctx.data))
        await ctx.session.execute(sa.text("SELECT 1"))
        return {"reserved": ctx.data["amount"]}

    @saga.step("CHARGE")
    async def charge(ctx: StepContext) -> dict[str, object]:
        seen.append(dict(ctx.data))
        return {"charged": ctx.data["reserved"], "key": ctx.idempotency_key}

    @saga.step("NOTIFY")
    async def notify(ctx: StepContext) -> None:
        seen.append(dict(ctx.data))

    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker(concurrency=4):
        saga_id = await engine.start(saga.name, {"amount": 5})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))

    assert run.status is SagaStatus.COMPLETED
    assert run.data == {"amount": 5, "reserved": 5, "charged": 5, "key": f"{saga_id}:CHARGE"}
    assert run.current_step is None
    assert run.finished_at is not None
    assert run.error is None
    assert seen == [
        {"amount": 5},
        {"amount": 5, "reserved": 5},
        {"amount": 5, "reserved": 5, "charged": 5, "key": f"{saga_id}:CHARGE"},
    ]
    events = await engine.history(saga_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [(e.kind, e.step) for e in events] == [
        (EventKind.SAGA_STARTED, None),
        (EventKind.STEP_SUCCEEDED, "RESERVE"),
        (EventKind.STEP_SUCCEEDED, "CHARGE"),
        (EventKind.STEP_SUCCEEDED, "NOTIFY"),
        (EventKind.SAGA_COMPLETED, None),
    ]
    assert all(e.attempt == 1 for e in events if e.kind is EventKind.STEP_SUCCEEDED)


async def test_runs_started_elsewhere_are_claimed(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A run inserted by a process without a worker is claimed and finished by a worker."""
    recorder = Recorder()
    saga = build_saga(f"claimed_{unique}", recorder)
    starter = make_engine([saga], worker_id=f"starter-{unique}")
    await starter.create_schema()
    ids = [await starter.start(saga.name, {"n": i}) for i in range(5)]
    assert {(await starter.get(i)).status for i in ids} == {SagaStatus.PENDING}

    worker_engine = make_engine([saga])
    async with worker_engine.worker(concurrency=2):
        runs = [await worker_engine.wait(i, timeout=timedelta(seconds=10)) for i in ids]
    assert {r.status for r in runs} == {SagaStatus.COMPLETED}
    assert recorder.forward() == ["A", "B", "C"] * 5 or sorted(recorder.forward()) == sorted(
        ["A", "B", "C"] * 5
    )


async def test_metrics_are_recorded(make_engine: Callable[..., SagaEngine], unique: str) -> None:
    """Started, finished, durations and in-flight are observed, not just defined."""
    saga = build_saga(f"metrics_{unique}", Recorder())
    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker(concurrency=2):
        saga_id = await engine.start(saga.name, {})
        await engine.wait(saga_id, timeout=timedelta(seconds=10))
    registry = engine.metrics.registry

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"saga_type": saga.name, **labels})

    assert sample("saga_started_total") == 1
    assert sample("saga_finished_total", status="COMPLETED") == 1
    assert sample("saga_duration_seconds_count", status="COMPLETED") == 1
    assert sample("saga_step_duration_seconds_count", step="B", outcome="success") == 1
    assert sample("saga_in_flight") == 0


async def test_attempts_record_the_worker_that_ran_them(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Every attempt's event names the worker that ran it (audit: who did what)."""
    saga = build_saga(f"who_{unique}", Recorder())
    engine = make_engine([saga], worker_id=f"auditor-{unique}")
    await engine.create_schema()
    async with engine.worker(concurrency=2):
        saga_id = await engine.start(saga.name, {})
        await engine.wait(saga_id, timeout=timedelta(seconds=10))
    attempts = [e for e in await engine.history(saga_id) if e.kind is EventKind.STEP_SUCCEEDED]
    assert [e.detail["worker"] for e in attempts] == [f"auditor-{unique}"] * 3
