"""Retries: durable backoff in next_run_at, jitter, non-retryable errors, restarts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from cloudphone.saga import (
    EventKind,
    NonRetryableError,
    RetryLater,
    RetryPolicy,
    Saga,
    SagaEngine,
    SagaStatus,
    StepContext,
)
from cloudphone.saga.testing import FaultInjector
from tests.support.sagas import Recorder, build_saga
from tests.support.waiting import eventually


async def test_transient_errors_are_retried_with_backoff(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Two failures then success: three attempts, each retry scheduled after a growing delay."""
    policy = RetryPolicy(
        max_attempts=4,
        initial_interval=timedelta(milliseconds=40),
        backoff_coefficient=2,
        max_interval=timedelta(seconds=1),
        jitter=False,
    )
    recorder = Recorder()
    saga = build_saga(f"retry_{unique}", recorder, retry=policy)
    faults = FaultInjector()
    faults.fail("B", times=2, error=ConnectionError("provider down"))
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))

    assert run.status is SagaStatus.COMPLETED
    assert run.data["B"] == 3  # the attempt number that succeeded
    events = await engine.history(saga_id)
    failed = [e for e in events if e.kind is EventKind.STEP_FAILED]
    assert [(e.step, e.attempt, e.detail["error"]["type"]) for e in failed] == [
        ("B", 1, "ConnectionError"),
        ("B", 2, "ConnectionError"),
    ]
    scheduled = [e for e in events if e.kind is EventKind.RETRY_SCHEDULED]
    assert [e.detail["delay_ms"] for e in scheduled] == [40.0, 80.0]
    starts = {
        e.attempt: e.detail["started_at"]
        for e in events
        if e.step == "B" and e.kind in (EventKind.STEP_FAILED, EventKind.STEP_SUCCEEDED)
    }
    for attempt, delay in ((2, 0.04), (3, 0.08)):
        previous_end = next(e.at for e in failed if e.attempt == attempt - 1)
        assert datetime.fromisoformat(starts[attempt]) >= previous_end + timedelta(seconds=delay)


async def test_retry_wait_is_stored_in_next_run_at(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """While waiting for a retry the run is released with next_run_at in the database."""
    policy = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=30), jitter=False)
    saga = build_saga(f"durable_{unique}", Recorder(), retry=policy)
    faults = FaultInjector()
    faults.fail("A", times=1)
    engine = make_engine([saga], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        run = await eventually(
            lambda: engine.get(saga_id), lambda r: r.attempt == 2, what="retry scheduled"
        )
    assert run.status is SagaStatus.RUNNING
    assert run.owner is None
    assert run.current_step == "A"
    assert run.next_run_at is not None
    waited = (run.next_run_at - run.updated_at).total_seconds()
    assert abs(waited - 30) < 0.01


async def test_restarted_worker_retries_on_time(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A worker stopped during the backoff and a new one started later retries at next_run_at."""
    policy = RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=600), jitter=False)
    recorder = Recorder()
    saga = build_saga(f"restart_{unique}", recorder, retry=policy)
    faults = FaultInjector()
    faults.fail("A", times=1)
    first = make_engine([saga], hooks=faults)
    await first.create_schema()
    async with first.worker():
        saga_id = await first.start(saga.name, {})
        waiting = await eventually(
            lambda: first.get(saga_id), lambda r: r.attempt == 2, what="retry scheduled"
        )
    # The first worker is gone; a fresh engine (another process in real life) takes over.
    second = make_engine([saga])
    async with second.worker():
        run = await second.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED
    retried = next(
        e
        for e in await second.history(saga_id)
        if e.kind is EventKind.STEP_SUCCEEDED and e.step == "A"
    )
    started = datetime.fromisoformat(retried.detail["started_at"])
    assert waiting.next_run_at is not None
    assert started >= waiting.next_run_at
    assert started - waiting.next_run_at < timedelta(seconds=1)


async def test_non_retryable_error_skips_remaining_attempts(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """NonRetryableError (or a type in non_retryable) fails the step after one attempt."""
    policy = RetryPolicy(
        max_attempts=5, initial_interval=timedelta(milliseconds=5), non_retryable=(PermissionError,)
    )
    recorder = Recorder()
    saga = build_saga(f"nonretry_{unique}", recorder, retry=policy)
    faults = FaultInjector()
    faults.fail("B", times=None, error=NonRetryableError("card declined"), saga=saga.name)
    other = build_saga(f"nonretry2_{unique}", Recorder(), retry=policy)
    faults.fail("C", times=None, error=PermissionError("forbidden"), saga=other.name)
    engine = make_engine([saga, other], hooks=faults)
    await engine.create_schema()
    async with engine.worker():
        first = await engine.wait(await engine.start(saga.name, {}), timeout=timedelta(seconds=10))
        second = await engine.wait(
            await engine.start(other.name, {}), timeout=timedelta(seconds=10)
        )
    assert first.status is SagaStatus.COMPENSATED
    assert faults.attempts("B", saga=saga.name) == 1
    assert first.error is not None
    assert first.error.message == "card declined"
    assert second.status is SagaStatus.COMPENSATED
    assert faults.attempts("C", saga=other.name) == 1


async def test_jitter_spreads_retry_delays(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """With full jitter the stored delay is the random fraction of the backoff."""
    policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(milliseconds=100), jitter=True)
    saga = build_saga(f"jitter_{unique}", Recorder(), retry=policy)
    faults = FaultInjector()
    faults.fail("A", times=1)
    engine = make_engine([saga], hooks=faults, rand=lambda: 0.25)
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        await engine.wait(saga_id, timeout=timedelta(seconds=10))
    scheduled = [e for e in await engine.history(saga_id) if e.kind is EventKind.RETRY_SCHEDULED]
    assert [e.detail["delay_ms"] for e in scheduled] == [25.0]


async def test_retry_later_polls_without_using_attempts(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A step raising RetryLater more often than max_attempts is polled until it is done."""
    saga = Saga(f"poll_{unique}", retry=RetryPolicy(max_attempts=2))
    polls: list[int] = []

    @saga.step("AWAIT_PROVIDER")
    async def await_provider(ctx: StepContext) -> dict[str, str]:
        polls.append(ctx.attempt)
        if len(polls) < 5:
            raise RetryLater("provider still processing", delay=timedelta(milliseconds=10))
        return {"provider_status": "succeeded"}

    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED
    assert polls == [1, 1, 1, 1, 1]
    events = await engine.history(saga_id)
    postponed = [e for e in events if e.kind is EventKind.STEP_POSTPONED]
    assert len(postponed) == 4
    assert postponed[0].detail["reason"] == "provider still processing"
    assert not any(e.kind is EventKind.STEP_FAILED for e in events)
