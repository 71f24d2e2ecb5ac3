"""Typed sagas on the test kit: validated input, outputs kept per step, collisions refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, Field

from cloudphone.saga import (
    EventKind,
    InvalidSagaInputError,
    MissingOutputError,
    NonRetryableError,
    RetryPolicy,
    Saga,
    SagaRun,
    SagaStatus,
    StepContext,
    StepKind,
    StepOutputError,
    UnknownSagaTypeError,
)
from cloudphone.saga.testing import MemoryEngine, StepEnvironment


class RefundInput(BaseModel):
    refund_id: str
    amount: int = Field(gt=0)
    requested_at: datetime


@dataclass(frozen=True)
class Hold:
    hold_id: str
    held: int


class ProviderRefund(BaseModel):
    provider_refund_id: str


seen: list[Any] = []

refund = Saga("typed_refund", input=RefundInput, retry=RetryPolicy(max_attempts=2))


@refund.step("HOLD")
async def hold(ctx: StepContext[RefundInput]) -> Hold:
    seen.append(ctx.input)
    return Hold(hold_id=f"hold-{ctx.input.refund_id}", held=ctx.input.amount)


@refund.step("REFUND", kind=StepKind.PIVOT)
async def call_provider(ctx: StepContext[RefundInput]) -> ProviderRefund:
    held = ctx.output("HOLD", Hold)
    seen.append(held)
    return ProviderRefund(provider_refund_id=f"re-{held.hold_id}")


@refund.step("RECORD")
async def record(ctx: StepContext[RefundInput]) -> None:
    seen.append((ctx.output("REFUND"), dict(ctx.data)))


WHEN = datetime(2030, 1, 1, tzinfo=UTC)


async def run_one(engine: MemoryEngine, saga: Saga | str, value: Any) -> SagaRun:
    async with engine.worker():
        saga_id = await engine.start(saga, value)
        return await engine.wait(saga_id, timeout=timedelta(seconds=5))


@pytest.mark.parametrize(
    "value",
    [
        RefundInput(refund_id="r1", amount=5, requested_at=WHEN),
        {"refund_id": "r1", "amount": "5", "requested_at": "2030-01-01T00:00:00Z"},
    ],
    ids=["instance", "dict"],
)
async def test_a_typed_saga_validates_its_input_and_steps_read_it_typed(value: Any) -> None:
    seen.clear()
    run = await run_one(MemoryEngine([refund]), refund, value)
    assert run.status is SagaStatus.COMPLETED
    stored = {"refund_id": "r1", "amount": 5, "requested_at": "2030-01-01T00:00:00Z"}
    assert run.input == stored, "the input is stored as its JSON form"
    parsed, held, (pivot_output, data) = seen
    assert parsed == RefundInput(refund_id="r1", amount=5, requested_at=WHEN)
    assert held == Hold(hold_id="hold-r1", held=5)
    assert pivot_output == {"provider_refund_id": "re-hold-r1"}
    merged = {**stored, "hold_id": "hold-r1", "held": 5, "provider_refund_id": "re-hold-r1"}
    assert data == merged
    assert run.data == merged
    assert run.outputs == {
        "HOLD": {"hold_id": "hold-r1", "held": 5},
        "REFUND": {"provider_refund_id": "re-hold-r1"},
        "RECORD": None,
    }


async def test_invalid_input_is_refused_before_anything_is_stored() -> None:
    engine = MemoryEngine([refund])
    with pytest.raises(InvalidSagaInputError) as refused:
        await engine.start("typed_refund", {"refund_id": "r1", "amount": 0})
    message = str(refused.value)
    assert message.startswith("input of saga 'typed_refund' does not fit RefundInput: ")
    assert "amount: Input should be greater than 0" in message
    assert "requested_at: Field required" in message
    assert [(e["loc"], e["type"]) for e in refused.value.errors] == [
        (["amount"], "greater_than"),
        (["requested_at"], "missing"),
    ]
    assert await engine.list() == []


async def test_a_saga_is_started_by_its_object_or_its_name_and_must_be_registered() -> None:
    engine = MemoryEngine([refund])
    value = RefundInput(refund_id="r2", amount=1, requested_at=WHEN)
    assert (await run_one(engine, "typed_refund", value)).status is SagaStatus.COMPLETED
    stranger = Saga("stranger")
    with pytest.raises(UnknownSagaTypeError, match="unknown saga type 'stranger'"):
        await engine.start(stranger, {})


async def test_an_untyped_saga_keeps_dict_input() -> None:
    plain = Saga("plain")
    inputs: list[Any] = []

    @plain.step("A")
    async def a(ctx: StepContext) -> dict[str, Any]:
        inputs.append(ctx.input)
        return {"a": 1}

    @plain.step("B")
    async def b(ctx: StepContext) -> None:
        inputs.append((ctx.input, ctx.output("A")))

    run = await run_one(MemoryEngine([plain]), plain, {"x": 1})
    assert (run.status, run.data, run.input) == (SagaStatus.COMPLETED, {"x": 1, "a": 1}, {"x": 1})
    assert inputs == [{"x": 1}, ({"x": 1}, {"a": 1})], "ctx.input is the input, not the data"
    with pytest.raises(InvalidSagaInputError, match="must be a dict"):
        await MemoryEngine([plain]).start(plain, [1, 2])


def colliding(key_of_b: str) -> Saga:
    saga = Saga("collide")

    @saga.step("A")
    async def a(ctx: StepContext) -> dict[str, Any]:
        return {"a": 1}

    @a.compensate
    async def undo_a(ctx: StepContext) -> None:
        return None

    @saga.step("B")
    async def b(ctx: StepContext) -> dict[str, Any]:
        return {key_of_b: 2}

    return saga


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("a", "step 'B' returned key 'a', which step 'A' already set"),
        ("x", "step 'B' returned key 'x', which the saga input already has"),
    ],
)
async def test_a_step_overwriting_another_parts_key_fails_at_once(key: str, says: str) -> None:
    engine = MemoryEngine([colliding(key)])
    run = await run_one(engine, "collide", {"x": 1})
    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None
    assert (run.error.type, run.error.step) == ("StepOutputError", "B")
    assert run.error.message.startswith(says)
    assert "read earlier outputs with ctx.output(step)" in run.error.message
    failures = [e for e in await engine.history(run.id) if e.kind is EventKind.STEP_FAILED]
    assert len(failures) == 1, "a collision was retried"
    assert run.data == {"x": 1, "a": 1}


async def test_a_step_run_again_replaces_its_own_output() -> None:
    """Forward recovery re-runs a step whose compensation failed: its new output wins."""
    saga = Saga("again")
    b_fails = [True]

    @saga.step("A")
    async def a(ctx: StepContext) -> dict[str, Any]:
        return {"a": len(b_fails)}

    @a.compensate
    async def cannot_undo(ctx: StepContext) -> None:
        raise NonRetryableError("the provider kept it")

    @saga.step("B")
    async def b(ctx: StepContext) -> dict[str, Any]:
        if b_fails[-1]:
            raise NonRetryableError("refused")
        return {"b": ctx.output("A")["a"]}

    engine = MemoryEngine([saga])
    async with engine.worker():
        saga_id = await engine.start(saga, {})
        failed = await engine.wait(saga_id)
        assert (failed.status, failed.current_step, failed.outputs) == (
            SagaStatus.FAILED,
            "A",
            {"A": {"a": 1}},
        )
        b_fails.append(False)
        await engine.retry(saga_id, forward=True)
        run = await engine.wait(saga_id)
    assert (run.status, run.outputs) == (SagaStatus.COMPLETED, {"A": {"a": 2}, "B": {"b": 2}})


async def test_reading_an_output_that_is_not_there_is_a_clear_error() -> None:
    saga = Saga("missing")
    errors: list[str] = []

    @saga.step("A")
    async def a(ctx: StepContext) -> None:
        return None

    @saga.step("B")
    async def b(ctx: StepContext) -> None:
        for step in ("A", "B", "C", "NOPE"):
            with pytest.raises(MissingOutputError) as missing:
                ctx.output(step)
            errors.append(str(missing.value))

    @saga.step("C")
    async def c(ctx: StepContext) -> None:
        return None

    assert (await run_one(MemoryEngine([saga]), saga, {})).status is SagaStatus.COMPLETED
    assert errors == [
        "step 'A' returned no output",
        "step 'B' has not run yet (the run is at 'B')",
        "step 'C' has not run yet (the run is at 'B')",
        "the saga has no step 'NOPE'; it has ['A', 'B', 'C']",
    ]


async def test_an_output_that_does_not_fit_the_type_it_is_read_as_fails_the_step() -> None:
    env = StepEnvironment(refund, {"refund_id": "r", "amount": 1, "requested_at": WHEN})
    env.outputs["HOLD"] = {"hold_id": "h"}
    with pytest.raises(
        StepOutputError, match="output of step 'HOLD' does not fit Hold: held: Field required"
    ):
        await env.run("REFUND")
