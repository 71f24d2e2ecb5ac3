"""Deadline: before the pivot it cancels and compensates (TIMED_OUT); after, it is noted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cloudphone.saga import EventKind, Saga, SagaEngine, SagaStatus, StepContext
from cloudphone.saga.testing import FaultInjector
from tests.support.sagas import Recorder, build_saga


async def test_hanging_step_is_cancelled_at_deadline(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A hung step is cancelled at the deadline; started steps are undone; TIMED_OUT."""
    recorder = Recorder()
    saga = build_saga(
        f"deadline_{unique}",
        recorder,
        steps=("A", "B", "P"),
        pivot="P",
        timeout=timedelta(milliseconds=400),
    )
    faults = FaultInjector()
    faults.hang("B", times=None)
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.TIMED_OUT
    assert recorder.undone() == ["B", "A"]
    assert run.finished_at is not None
    assert run.deadline_at is not None
    # Cancelled at the deadline, not after some much later timeout.
    assert run.finished_at - run.deadline_at < timedelta(seconds=1)
    events = await engine.history(saga_id)
    kinds = [e.kind for e in events]
    assert EventKind.DEADLINE_EXCEEDED in kinds
    assert kinds[-1] is EventKind.SAGA_TIMED_OUT
    assert "P" not in recorder.forward()


async def test_deadline_after_pivot_is_recorded_and_saga_goes_on(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Past the pivot the deadline only adds an event; the saga still completes."""
    saga = Saga(f"late_{unique}", timeout=timedelta(milliseconds=200))

    @saga.step("P", pivot=True)
    async def pivot(ctx: StepContext) -> dict[str, bool]:
        return {"refunded": True}

    @saga.step("SLOW")
    async def slow(ctx: StepContext) -> None:
        # Work that runs past the deadline: after the pivot it must not be cancelled.
        assert ctx.deadline is not None
        await asyncio.sleep((ctx.deadline - datetime.now(UTC)).total_seconds() + 0.05)

    @saga.step("LAST")
    async def last(ctx: StepContext) -> None:
        return None

    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED
    events = await engine.history(saga_id)
    assert [e.kind for e in events].count(EventKind.DEADLINE_PASSED) == 1
    assert EventKind.COMPENSATION_STARTED not in {e.kind for e in events}


async def test_step_timeout_is_a_retryable_failure(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """An attempt longer than its step timeout is cancelled and retried."""
    recorder = Recorder()
    saga = build_saga(
        f"steptimeout_{unique}", recorder, step_timeout={"B": timedelta(milliseconds=100)}
    )
    faults = FaultInjector()
    faults.hang("B", times=1)
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED
    failed = [e for e in await engine.history(saga_id) if e.kind is EventKind.STEP_FAILED]
    assert [(e.step, e.detail["error"]["type"]) for e in failed] == [("B", "StepTimeoutError")]
