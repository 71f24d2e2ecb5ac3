"""Compensation: reverse order including the failed step; retried; failing for good → FAILED."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from cloudphone.saga import EventKind, NonRetryableError, SagaEngine, SagaStatus, StepContext
from cloudphone.saga.testing import FaultInjector
from tests.support.sagas import Recorder, build_saga


async def test_compensates_in_reverse_including_failed_step(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """C fails for good: C (it may have partly acted), then B, then A are undone."""
    recorder = Recorder()
    saga = build_saga(f"comp_{unique}", recorder, steps=("A", "B", "C", "D"), transactional=("A",))
    faults = FaultInjector()
    faults.fail("C", times=None, error=RuntimeError("quota service down"))
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))

    assert run.status is SagaStatus.COMPENSATED
    assert recorder.undone() == ["C", "B", "A"]
    assert "D" not in recorder.forward()
    assert run.error is not None
    assert run.error.step == "C"
    assert run.compensation_cause == "failed"
    events = await engine.history(saga_id)
    assert [e.step for e in events if e.kind is EventKind.COMPENSATION_SUCCEEDED] == ["C", "B", "A"]
    assert events[-1].kind is EventKind.SAGA_COMPENSATED


async def test_steps_without_compensation_are_skipped(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Only steps that declare a compensation are undone."""
    recorder = Recorder()
    saga = build_saga(f"skip_{unique}", recorder, steps=("A", "B", "C"), compensated=("A",))
    faults = FaultInjector()
    faults.fail("C", times=None, error=NonRetryableError("no"))
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        run = await engine.wait(await engine.start(saga.name, {}), timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPENSATED
    assert recorder.undone() == ["A"]


async def test_compensations_retry_until_they_succeed(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A compensation failing transiently more often than max_attempts is still retried."""
    recorder = Recorder()
    saga = build_saga(f"compretry_{unique}", recorder)
    faults = FaultInjector()
    faults.fail("C", times=None, error=NonRetryableError("stop"))
    faults.fail("B", times=5, error=ConnectionError("flaky"), compensating=True)
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        run = await engine.wait(await engine.start(saga.name, {}), timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPENSATED
    assert faults.attempts("B", compensating=True) == 6  # max_attempts is 3: not a limit here
    assert recorder.undone() == ["C", "B", "A"]


async def test_compensation_failing_for_good_leaves_saga_failed(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A non-retryable compensation error → FAILED with the reason, never COMPENSATED."""
    recorder = Recorder()
    saga = build_saga(f"compfail_{unique}", recorder)
    faults = FaultInjector()
    faults.fail("C", times=None, error=NonRetryableError("stop"))
    faults.fail(
        "B", times=None, error=NonRetryableError("container vanished oddly"), compensating=True
    )
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.FAILED
    assert run.current_step == "B"
    assert run.error is not None
    assert "container vanished oddly" in run.error.message
    assert recorder.undone() == ["C"]  # A is not undone while B's undo is unresolved
    events = await engine.history(saga_id)
    assert events[-1].kind is EventKind.SAGA_FAILED
    assert "container vanished oddly" in events[-1].detail["reason"]
    assert not any(e.kind is EventKind.SAGA_COMPENSATED for e in events)


async def test_after_action_hook_runs_for_compensations(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Hooks see a compensation finish before its commit (so crash_after can target undos)."""
    seen: list[tuple[str, bool]] = []

    class Recording(FaultInjector):
        async def after_action(self, ctx: StepContext, output: object) -> None:  # type: ignore[override]
            seen.append((ctx.step, ctx.compensating))

    recorder = Recorder()
    saga = build_saga(f"hooks_{unique}", recorder, steps=("A", "B"))
    faults = Recording()
    faults.fail("B", times=None, error=NonRetryableError("stop"))
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        run = await engine.wait(await engine.start(saga.name, {}), timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPENSATED
    assert seen == [("A", False), ("B", True), ("A", True)]
