"""Explicit step kinds, per-step non-retryable errors and input types, checked at definition."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from cloudphone.saga import (
    NonRetryableError,
    RetryPolicy,
    Saga,
    SagaDefinitionError,
    SagaStatus,
    StepContext,
    StepKind,
    decide,
)
from cloudphone.saga.progress import RunState

C, P, R = StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE


async def act(ctx: StepContext) -> dict[str, Any]:
    return {}


async def undo(ctx: StepContext) -> None:
    return None


def with_kinds(*kinds: StepKind | None) -> Saga:
    saga = Saga("kinds")
    for i, kind in enumerate(kinds):
        saga.step(f"S{i}", kind=kind)(act)
    return saga


def at(saga: Saga, index: int) -> RunState:
    return RunState(
        id="r",
        saga_type=saga.name,
        status=SagaStatus.RUNNING,
        step_index=index,
        step=saga.steps[index].name,
        attempt=1,
        input={},
        outputs={},
        error=None,
        compensation_cause=None,
        epoch=1,
        created_at=datetime(2030, 1, 1, tzinfo=UTC),
        deadline_at=None,
        deadline_noted=False,
        cancel_requested=False,
    )


def test_kinds_given_explicitly_are_kept() -> None:
    saga = with_kinds(C, C, P, R)
    assert [s.kind for s in saga.steps] == [C, C, P, R]
    assert (saga.pivot_index, saga.forward_from) == (2, 3)


def test_kinds_left_out_follow_the_step_before() -> None:
    """After a pivot or a retriable step an unmarked step is retriable, else compensatable."""
    assert [s.kind for s in with_kinds(None, P, None).steps] == [C, P, R]
    assert [s.kind for s in with_kinds(None, R, None).steps] == [C, R, R]


def test_pivot_true_is_a_shorthand_for_the_pivot_kind() -> None:
    saga = Saga("kinds")
    saga.step("A", pivot=True, kind=StepKind.PIVOT)(act)
    assert saga.steps[0].kind is P
    with pytest.raises(SagaDefinitionError, match=r"step 'B' says pivot=True and kind='retriable'"):
        saga.step("B", pivot=True, kind=R)


@pytest.mark.parametrize(
    ("kinds", "message"),
    [
        ((P, C), "compensatable step 'S1' cannot follow pivot step 'S0'"),
        ((R, C), "compensatable step 'S1' cannot follow retriable step 'S0'"),
        ((C, R, P), "pivot step 'S2' cannot follow retriable step 'S1'"),
        ((P, R, R, C), "compensatable step 'S3' cannot follow retriable step 'S2'"),
    ],
)
def test_kinds_out_of_order_are_refused_naming_both_steps(
    kinds: tuple[StepKind, ...], message: str
) -> None:
    saga = Saga("kinds")
    for i, kind in enumerate(kinds[:-1]):
        saga.step(f"S{i}", kind=kind)(act)
    with pytest.raises(SagaDefinitionError, match=message):
        saga.step(f"S{len(kinds) - 1}", kind=kinds[-1])
    assert len(saga.steps) == len(kinds) - 1, "the refused step was registered"


def test_a_second_pivot_by_kind_is_refused() -> None:
    with pytest.raises(SagaDefinitionError, match="'S0' already is"):
        with_kinds(P, P)


def test_a_retriable_step_cannot_have_a_compensation() -> None:
    saga = Saga("kinds")
    handle = saga.step("A", kind=R)(act)
    with pytest.raises(SagaDefinitionError, match="never compensated"):
        handle.compensate(undo)


def test_without_a_pivot_the_first_retriable_step_is_the_point_of_no_return() -> None:
    """C, R, R: the saga only moves forward once its compensatable steps are done."""
    saga = with_kinds(C, R, R)
    assert (saga.pivot_index, saga.forward_from) == (None, 1)
    assert [decide.past_pivot(at(saga, i), saga) for i in range(3)] == [False, True, True]
    cancelled = decide.on_cancel(at(saga, 1), saga, datetime(2030, 1, 1, tzinfo=UTC))
    assert cancelled.status is SagaStatus.RUNNING, "a cancel undid a step that cannot be undone"


def test_a_saga_of_retriable_steps_only_moves_forward() -> None:
    saga = with_kinds(R, R)
    assert saga.forward_from == 0
    assert decide.past_pivot(at(saga, 0), saga)


class Declined(Exception):
    pass


def test_a_step_declares_its_own_non_retryable_errors() -> None:
    saga = Saga("kinds", retry=RetryPolicy(max_attempts=5, non_retryable=(KeyError,)))
    saga.step("A", non_retryable=(Declined,))(act)
    saga.step("B")(act)
    a, b = (saga.policy_for(step) for step in saga.steps)
    assert (a.max_attempts, a.non_retryable) == (5, (KeyError, Declined))
    assert not a.is_retryable(Declined("no"))
    assert not a.is_retryable(KeyError("k"))
    assert b.is_retryable(Declined("no")), "the declaration leaked to another step"
    assert saga.steps[0].non_retryable == (Declined,)


def test_non_retryable_must_hold_exception_types() -> None:
    with pytest.raises(SagaDefinitionError, match=r"step 'A'.*not an exception type"):
        Saga("kinds").step("A", non_retryable=("ValueError",))  # type: ignore[arg-type]


class PydanticInput(BaseModel):
    refund_id: str


@dataclass(frozen=True)
class DataclassInput:
    refund_id: str


@pytest.mark.parametrize("kind", [PydanticInput, DataclassInput])
def test_input_types_are_pydantic_models_or_dataclasses(kind: type[Any]) -> None:
    saga = Saga("typed", input=kind)
    assert saga.input_type is kind
    assert saga.input_adapter is not None
    assert saga.input_adapter.validate_python({"refund_id": "r1"}) == kind(refund_id="r1")


@pytest.mark.parametrize("kind", [int, dict, list[str]])
def test_other_input_types_are_refused(kind: Any) -> None:
    with pytest.raises(SagaDefinitionError, match="must be a pydantic model or a dataclass"):
        Saga("typed", input=kind)


def test_untyped_sagas_have_no_input_type() -> None:
    assert (Saga("plain").input_type, Saga("plain").input_adapter) == (None, None)


def test_non_retryable_error_stays_the_default_classification() -> None:
    policy = RetryPolicy()
    assert policy.is_retryable(ConnectionError("down"))
    assert not policy.is_retryable(NonRetryableError("no"))
