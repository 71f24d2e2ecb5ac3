"""Retry budgets on the test kit: past the budget a run needs attention, and a retry resumes it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cloudphone.saga import (
    EventKind,
    NonRetryableError,
    RetryPolicy,
    Saga,
    SagaStatus,
    StepContext,
)
from cloudphone.saga.testing import MemoryEngine

MINUTE = timedelta(minutes=1)


class ProviderDown(Exception):
    pass


class Declined(Exception):
    pass


def flaky_saga(name: str, *, failing: list[bool], step_retry: RetryPolicy | None = None) -> Saga:
    """PREPARE → CHARGE (pivot) → NOTIFY, which raises ProviderDown while ``failing[-1]``."""
    saga = Saga(name, retry=RetryPolicy(max_interval=MINUTE, budget=timedelta(minutes=10)))

    @saga.step("PREPARE")
    async def prepare(ctx: StepContext) -> None:
        return None

    @saga.step("CHARGE", pivot=True)
    async def charge(ctx: StepContext) -> None:
        return None

    @saga.step("NOTIFY", retry=step_retry, non_retryable=(Declined,))
    async def notify(ctx: StepContext) -> dict[str, Any]:
        if failing[-1]:
            raise ProviderDown("mail server down")
        return {"sent": True}

    return saga


def attention(engine: MemoryEngine, saga_type: str) -> float | None:
    return engine.metrics.registry.get_sample_value(
        "saga_needs_attention", {"saga_type": saga_type}
    )


async def test_a_step_after_the_pivot_stops_retrying_when_its_budget_is_spent() -> None:
    failing = [True]
    engine = MemoryEngine([flaky_saga("budget", failing=failing)])
    async with engine.worker():
        saga_id = await engine.start("budget", {})
        await engine.advance(timedelta(minutes=9))
        waiting = await engine.get(saga_id)
        assert (waiting.status, waiting.current_step) == (SagaStatus.RUNNING, "NOTIFY")
        assert waiting.retry_since == engine.clock.now() - timedelta(minutes=9)
        assert attention(engine, "budget") in (None, 0.0)

        await engine.advance(timedelta(minutes=2))
        run = await engine.get(saga_id)
        assert (run.status, run.current_step, run.resolution) == (SagaStatus.FAILED, "NOTIFY", None)
        assert [r.id for r in await engine.list(needs_attention=True)] == [saga_id]
        assert attention(engine, "budget") == 1.0
        failed = (await engine.history(saga_id))[-1]
        assert failed.kind is EventKind.SAGA_FAILED
        assert failed.detail["budget_exhausted"] is True
        assert failed.detail["reason"].startswith("retry budget of 0:10:00 ran out: NOTIFY")
        attempts = engine.faults.attempts("NOTIFY")
        await engine.advance(timedelta(hours=1))
        assert engine.faults.attempts("NOTIFY") == attempts, "it kept retrying past its budget"

        # The operator fixes the mail server and retries: a fresh budget, and it finishes.
        failing.append(False)
        retried = await engine.retry(saga_id, note="mail server is back")
        assert retried.retry_since is None
        done = await engine.wait(saga_id)
        await engine.settle()
    assert (done.status, done.outputs["NOTIFY"]) == (SagaStatus.COMPLETED, {"sent": True})
    assert attention(engine, "budget") == 0.0


async def test_the_default_budget_is_a_day_of_failures() -> None:
    saga = flaky_saga(
        "day", failing=[True], step_retry=RetryPolicy(max_interval=timedelta(hours=1))
    )
    engine = MemoryEngine([saga])
    async with engine.worker():
        saga_id = await engine.start("day", {})
        await engine.advance(timedelta(hours=23))
        assert (await engine.get(saga_id)).status is SagaStatus.RUNNING
        await engine.advance(timedelta(hours=2))
        assert (await engine.get(saga_id)).status is SagaStatus.FAILED


async def test_a_declared_non_retryable_error_fails_the_step_at_once() -> None:
    saga = flaky_saga("declined", failing=[True])
    engine = MemoryEngine([saga])
    engine.faults.fail("NOTIFY", times=1, error=Declined("address refused"))
    async with engine.worker():
        saga_id = await engine.start("declined", {})
        run = await engine.wait(saga_id)
    assert run.status is SagaStatus.FAILED
    assert engine.faults.attempts("NOTIFY") == 1
    assert (await engine.history(saga_id))[-1].detail == {
        "reason": "Declined in NOTIFY: address refused"
    }


async def test_a_compensation_stops_retrying_when_its_budget_is_spent() -> None:
    saga = Saga("undo", retry=RetryPolicy(max_interval=MINUTE, budget=timedelta(minutes=5)))
    broken = [True]

    @saga.step("RESERVE")
    async def reserve(ctx: StepContext) -> None:
        return None

    @reserve.compensate
    async def release(ctx: StepContext) -> None:
        if broken[-1]:
            raise ProviderDown("cannot release yet")

    @saga.step("CHARGE")
    async def charge(ctx: StepContext) -> None:
        raise NonRetryableError("card declined")

    engine = MemoryEngine([saga])
    async with engine.worker():
        saga_id = await engine.start("undo", {})
        await engine.advance(timedelta(minutes=4))
        assert (await engine.get(saga_id)).status is SagaStatus.COMPENSATING
        await engine.advance(timedelta(minutes=2))
        run = await engine.get(saga_id)
        assert (run.status, run.current_step) == (SagaStatus.FAILED, "RESERVE")
        reason = (await engine.history(saga_id))[-1].detail["reason"]
        assert reason.startswith("compensation failed: retry budget of 0:05:00 ran out: RESERVE")
        assert attention(engine, "undo") == 1.0
        broken.append(False)
        await engine.retry(saga_id)
        done = await engine.wait(saga_id)
    assert done.status is SagaStatus.COMPENSATED
