"""Pivot: after it succeeds, the saga only moves forward."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from cloudphone.saga import EventKind, NonRetryableError, SagaEngine, SagaStatus
from cloudphone.saga.testing import FaultInjector
from tests.support.sagas import Recorder, build_saga


async def test_failure_after_pivot_never_compensates(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A retriable step failing more often than max_attempts is retried until it succeeds."""
    recorder = Recorder()
    saga = build_saga(f"pivot_{unique}", recorder, steps=("A", "P", "R"), pivot="P")
    faults = FaultInjector()
    faults.fail("R", times=6, error=ConnectionError("db blip"))
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=15))
    assert run.status is SagaStatus.COMPLETED
    assert faults.attempts("R") == 7
    assert recorder.undone() == []
    kinds = {e.kind for e in await engine.history(saga_id)}
    assert EventKind.COMPENSATION_STARTED not in kinds


async def test_non_retryable_after_pivot_fails_for_operator(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A non-retryable error after the pivot → FAILED at that step, nothing compensated."""
    recorder = Recorder()
    saga = build_saga(f"pivotfail_{unique}", recorder, steps=("A", "P", "R"), pivot="P")
    faults = FaultInjector()
    faults.fail("R", times=None, error=NonRetryableError("order row is gone"))
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        run = await engine.wait(await engine.start(saga.name, {}), timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.FAILED
    assert run.current_step == "R"
    assert run.error is not None
    assert run.error.message == "order row is gone"
    assert recorder.undone() == []


async def test_pivot_failing_for_good_compensates_earlier_steps(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """The pivot itself failing after its attempts → the steps before it are undone."""
    recorder = Recorder()
    saga = build_saga(
        f"pivotcomp_{unique}",
        recorder,
        steps=("A", "B", "P", "R"),
        pivot="P",
        compensated=("A", "B"),
    )
    faults = FaultInjector()
    faults.fail("P", times=None, error=ConnectionRefusedError("refused"))
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        run = await engine.wait(await engine.start(saga.name, {}), timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPENSATED
    assert faults.attempts("P") == 3
    assert recorder.undone() == ["B", "A"]
    assert "R" not in recorder.forward()
