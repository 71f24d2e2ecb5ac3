"""Operator actions: retry a FAILED run, cancel before the pivot, resolve with a note."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from cloudphone.saga import (
    EventKind,
    NonRetryableError,
    OperatorActionError,
    Saga,
    SagaEngine,
    SagaStatus,
    StepContext,
)
from cloudphone.saga.testing import FaultInjector
from tests.support.sagas import Recorder, build_saga
from tests.support.waiting import eventually


async def test_retry_resumes_failed_saga_at_failed_step(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A FAILED run (post-pivot step failed for good) resumes at that step and completes."""
    recorder = Recorder()
    saga = build_saga(f"opretry_{unique}", recorder, steps=("A", "P", "R"), pivot="P")
    faults = FaultInjector()
    faults.fail("R", times=1, error=NonRetryableError("bad config"))
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        failed = await engine.wait(saga_id, timeout=timedelta(seconds=10))
        assert failed.status is SagaStatus.FAILED
        retried = await engine.retry(saga_id, actor="ops@example", note="config fixed")
        assert retried.status is SagaStatus.RUNNING
        assert retried.epoch == failed.epoch + 1
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED
    assert faults.attempts("R") == 2  # the failed attempt and the one after the retry
    assert recorder.forward() == ["A", "P", "R"]
    events = await engine.history(saga_id)
    op = next(e for e in events if e.kind is EventKind.OPERATOR_RETRY)
    assert op.step == "R"
    assert op.detail == {"actor": "ops@example", "note": "config fixed", "resumes": "RUNNING"}


async def test_retry_resumes_a_failed_compensation(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A run FAILED while compensating resumes compensating and ends COMPENSATED."""
    recorder = Recorder()
    saga = build_saga(f"opcomp_{unique}", recorder)
    faults = FaultInjector()
    faults.fail("C", times=None, error=NonRetryableError("stop"))
    faults.fail("B", times=1, error=NonRetryableError("needs a human"), compensating=True)
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        assert (
            await engine.wait(saga_id, timeout=timedelta(seconds=10))
        ).status is SagaStatus.FAILED
        await engine.retry(saga_id)
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPENSATED
    assert recorder.undone() == ["C", "B", "A"]


async def test_cancel_compensates_a_running_saga(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Cancel while a compensatable step runs: the attempt is interrupted and undone."""
    recorder = Recorder()
    saga = build_saga(f"opcancel_{unique}", recorder, steps=("A", "B", "P"), pivot="P")
    faults = FaultInjector()
    faults.hang("B", times=None)
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        await eventually(
            lambda: engine.get(saga_id), lambda r: r.current_step == "B", what="B running"
        )
        await engine.cancel(saga_id, actor="ops")
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPENSATED
    assert run.compensation_cause == "cancelled"
    assert recorder.undone() == ["B", "A"]
    kinds = [e.kind for e in await engine.history(saga_id)]
    assert EventKind.CANCEL_REQUESTED in kinds
    assert kinds[-1] is EventKind.SAGA_COMPENSATED


async def test_cancel_of_unclaimed_run_undoes_only_the_first_step(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A PENDING run runs no step; only the first step's (idempotent) undo runs."""
    recorder = Recorder()
    saga = build_saga(f"oppending_{unique}", recorder)
    engine = make_engine([saga])
    await engine.create_schema()
    saga_id = await engine.start(saga.name, {})
    run = await engine.cancel(saga_id)
    assert run.status is SagaStatus.COMPENSATING
    async with engine.worker():
        assert (
            await engine.wait(saga_id, timeout=timedelta(seconds=5))
        ).status is SagaStatus.COMPENSATED
    assert recorder.calls == ["undo:A"]


async def test_cancel_after_pivot_is_refused(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Past the pivot, cancel is refused with a clear reason and the saga keeps going."""
    saga = Saga(f"oppivot_{unique}")
    gate = asyncio.Event()

    @saga.step("P", pivot=True)
    async def pivot(ctx: StepContext) -> None:
        return None

    @saga.step("AFTER")
    async def after(ctx: StepContext) -> None:
        await gate.wait()

    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        await eventually(
            lambda: engine.get(saga_id), lambda r: r.current_step == "AFTER", what="past the pivot"
        )
        with pytest.raises(OperatorActionError, match="pivot"):
            await engine.cancel(saga_id)
        gate.set()
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED


async def test_resolve_closes_a_failed_saga_with_a_note(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Resolve marks a FAILED run handled; it cannot be retried or resolved again."""
    saga = build_saga(f"opresolve_{unique}", Recorder(), steps=("P", "R"), pivot="P")
    faults = FaultInjector()
    faults.fail("R", times=None, error=NonRetryableError("ledger mismatch"))
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        await engine.wait(saga_id, timeout=timedelta(seconds=10))
    with pytest.raises(OperatorActionError, match="note"):
        await engine.resolve(saga_id, note="  ")
    run = await engine.resolve(saga_id, note="ledger fixed by hand, ticket 42", actor="ops")
    assert run.status is SagaStatus.FAILED
    assert run.resolution == "ledger fixed by hand, ticket 42"
    assert await engine.list(saga_type=saga.name, needs_attention=True) == []
    with pytest.raises(OperatorActionError, match="already resolved"):
        await engine.retry(saga_id)
    with pytest.raises(OperatorActionError):
        await engine.resolve(saga_id, note="again")
    last = (await engine.history(saga_id))[-1]
    assert last.kind is EventKind.OPERATOR_RESOLVED
    assert last.detail == {"actor": "ops", "note": "ledger fixed by hand, ticket 42"}


async def test_operator_actions_refuse_wrong_states(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Retry/resolve need FAILED; cancel needs an active run before its pivot."""
    saga = build_saga(f"opstates_{unique}", Recorder())
    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        await engine.wait(saga_id, timeout=timedelta(seconds=10))
    for action in (
        engine.retry(saga_id),
        engine.resolve(saga_id, note="x"),
        engine.cancel(saga_id),
    ):
        with pytest.raises(OperatorActionError, match="COMPLETED"):
            await action


async def test_forward_retry_finishes_a_saga_whose_undo_failed(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Forward recovery: a run FAILED while compensating goes forward again on request."""
    saga = Saga(f"opforward_{unique}")
    calls: list[str] = []
    causes: list[tuple[str | None, str | None]] = []

    @saga.step("HOLD")
    async def hold(ctx: StepContext) -> None:
        calls.append("HOLD")

    @hold.compensate
    async def release(ctx: StepContext) -> None:
        calls.append("undo:HOLD")

    @saga.step("CALL", pivot=True)
    async def call(ctx: StepContext) -> dict[str, bool]:
        calls.append("CALL")
        if calls.count("CALL") == 1:
            raise NonRetryableError("answer lost")
        return {"called": True}

    @call.compensate
    async def check(ctx: StepContext) -> None:
        causes.append((ctx.compensation_cause, ctx.error.message if ctx.error else None))
        raise NonRetryableError("the call may have happened: an operator must decide")

    @saga.step("RECORD")
    async def record(ctx: StepContext) -> None:
        calls.append("RECORD")

    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        failed = await engine.wait(saga_id, timeout=timedelta(seconds=10))
        assert failed.status is SagaStatus.FAILED
        assert failed.compensation_cause == "failed"
        await engine.retry(saga_id, forward=True, note="provider shows the call went through")
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED
    assert run.compensation_cause is None
    assert calls == ["HOLD", "CALL", "CALL", "RECORD"]
    assert causes == [("failed", "answer lost")]
    retry = next(e for e in await engine.history(saga_id) if e.kind is EventKind.OPERATOR_RETRY)
    assert retry.detail["forward"] is True
    assert retry.detail["resumes"] == "RUNNING"


async def test_forward_retry_needs_a_failed_compensation(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A run that failed going forward already resumes forward; forward=True is refused."""
    saga = build_saga(f"opfwdref_{unique}", Recorder(), steps=("P", "R"), pivot="P")
    faults = FaultInjector()
    faults.fail("R", times=1, error=NonRetryableError("bad"))
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        assert (
            await engine.wait(saga_id, timeout=timedelta(seconds=10))
        ).status is SagaStatus.FAILED
        with pytest.raises(OperatorActionError, match="plain retry"):
            await engine.retry(saga_id, forward=True)
