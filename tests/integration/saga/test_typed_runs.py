"""Typed sagas and retry budgets on SQLite and PostgreSQL: the same behaviour as on the kit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from cloudphone.saga import (
    EventKind,
    NonRetryableError,
    RetryPolicy,
    Saga,
    SagaEngine,
    SagaStatus,
    StepContext,
    StepKind,
)
from tests.support.waiting import eventually

FAST_BUDGET = RetryPolicy(
    initial_interval=timedelta(milliseconds=20),
    max_interval=timedelta(milliseconds=50),
    jitter=False,
    budget=timedelta(milliseconds=400),
)


async def attention(engine: SagaEngine, labels: dict[str, str]) -> float | None:
    return engine.metrics.registry.get_sample_value("saga_needs_attention", labels)


class Order(BaseModel):
    order_id: str
    amount: int


class Reserved(BaseModel):
    reservation: str


def order_saga(name: str, *, collide: bool = False) -> Saga[Order]:
    saga = Saga(name, input=Order)

    @saga.step("RESERVE", transactional=True)
    async def reserve(ctx: StepContext[Order]) -> Reserved:
        await ctx.session.execute(sa.text("SELECT 1"))
        return Reserved(reservation=f"res-{ctx.input.order_id}")

    @reserve.compensate
    async def release(ctx: StepContext[Order]) -> None:
        return None

    @saga.step("CHARGE", transactional=True)
    async def charge(ctx: StepContext[Order]) -> dict[str, Any]:
        reserved = ctx.output("RESERVE", Reserved)
        await ctx.session.execute(sa.text("SELECT 1"))
        if collide:
            return {"reservation": "mine now"}
        return {"charged": ctx.input.amount, "for": reserved.reservation}

    return saga


async def test_a_typed_run_keeps_its_input_and_each_output(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    saga = order_saga(f"typed_{unique}")
    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker(concurrency=2):
        saga_id = await engine.start(saga, Order(order_id="o1", amount=7))
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED
    assert run.input == {"order_id": "o1", "amount": 7}
    assert run.outputs == {
        "RESERVE": {"reservation": "res-o1"},
        "CHARGE": {"charged": 7, "for": "res-o1"},
    }
    assert run.data == {
        "order_id": "o1",
        "amount": 7,
        "reservation": "res-o1",
        "charged": 7,
        "for": "res-o1",
    }
    assert (await engine.get(saga_id)).outputs == run.outputs


async def test_a_colliding_output_rolls_the_step_back_and_compensates(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    saga = order_saga(f"collide_{unique}", collide=True)
    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker(concurrency=2):
        saga_id = await engine.start(saga.name, {"order_id": "o2", "amount": 1})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None
    assert run.error.message.startswith(
        "step 'CHARGE' returned key 'reservation', which step 'RESERVE' already set"
    )
    assert run.outputs == {"RESERVE": {"reservation": "res-o2"}}
    failures = [e for e in await engine.history(saga_id) if e.kind is EventKind.STEP_FAILED]
    assert [e.attempt for e in failures] == [1], "a collision was retried"


async def test_a_step_past_its_budget_needs_attention_and_a_retry_finishes_it(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    saga = Saga(f"budget_{unique}", retry=FAST_BUDGET)
    down = [True]

    @saga.step("CHARGE", kind=StepKind.PIVOT)
    async def charge(ctx: StepContext) -> None:
        return None

    @saga.step("NOTIFY")
    async def notify(ctx: StepContext) -> None:
        if down[-1]:
            raise ConnectionError("mail server down")

    engine = make_engine([saga])
    await engine.create_schema()
    gauge = {"saga_type": saga.name}
    async with engine.worker(concurrency=2):
        saga_id = await engine.start(saga.name, {})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
        assert (run.status, run.current_step) == (SagaStatus.FAILED, "NOTIFY")
        assert run.retry_since is not None
        assert [r.id for r in await engine.list(needs_attention=True, saga_type=saga.name)] == [
            saga_id
        ]
        last = (await engine.history(saga_id))[-1]
        assert (last.kind, last.detail["budget_exhausted"]) == (EventKind.SAGA_FAILED, True)
        await eventually(lambda: attention(engine, gauge), lambda n: n == 1.0, what="gauge 1")

        down.append(False)
        await engine.retry(saga_id)
        done = await engine.wait(saga_id, timeout=timedelta(seconds=10))
        await eventually(lambda: attention(engine, gauge), lambda n: n == 0.0, what="gauge 0")
    assert (done.status, done.retry_since) == (SagaStatus.COMPLETED, None)


async def test_a_compensation_past_its_budget_needs_attention(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    saga = Saga(f"undo_{unique}", retry=FAST_BUDGET)

    @saga.step("RESERVE")
    async def reserve(ctx: StepContext) -> None:
        return None

    @reserve.compensate
    async def release(ctx: StepContext) -> None:
        raise ConnectionError("inventory down")

    @saga.step("CHARGE")
    async def charge(ctx: StepContext) -> None:
        raise NonRetryableError("card declined")

    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker(concurrency=2):
        run = await engine.wait(await engine.start(saga, {}), timeout=timedelta(seconds=10))
    assert (run.status, run.current_step, run.compensation_cause) == (
        SagaStatus.FAILED,
        "RESERVE",
        "failed",
    )
    reason = (await engine.history(run.id))[-1].detail["reason"]
    assert reason.startswith("compensation failed: retry budget of 0:00:00.400000 ran out")
