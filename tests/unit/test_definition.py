"""Saga and step definitions: errors at definition time, step kinds, compensations, context."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cloudphone.saga import (
    RetryPolicy,
    Saga,
    SagaDefinitionError,
    StepContext,
    StepHandle,
    StepKind,
)
from cloudphone.saga.context import idempotency_key


async def act(ctx: StepContext) -> dict[str, Any]:
    return {"seen": ctx.step}


async def undo(ctx: StepContext) -> None:
    return None


def sync_fn(ctx: StepContext) -> dict[str, Any]:
    return {}


def make_ctx(step: str = "A", session: Any = None) -> StepContext:
    return StepContext(
        saga_id="run-1",
        saga_type="demo",
        step=step,
        attempt=1,
        data={},
        idempotency_key=idempotency_key("run-1", step),
        deadline=None,
        _session=session,
    )


def saga_with(*names: str, pivot: str | None = None, **kwargs: Any) -> Saga:
    saga = Saga("demo", **kwargs)
    for name in names:
        saga.step(name, pivot=name == pivot)(act)
    return saga


# --- names and timeouts --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["payment_refund", "a", "app-upload.v2", "x" * 100])
def test_good_saga_names_are_accepted(name: str) -> None:
    assert Saga(name).name == name


@pytest.mark.parametrize(
    "name", ["", "Refund", "1refund", "_refund", "re fund", "refund!", "x" * 101, "réfund"]
)
def test_bad_saga_names_are_rejected_clearly(name: str) -> None:
    with pytest.raises(SagaDefinitionError, match=r"saga name .* must be 1-100 chars"):
        Saga(name)


@pytest.mark.parametrize("name", ["refund\n", "refund\r\n"])
def test_saga_name_with_trailing_newline_is_rejected(name: str) -> None:
    """Names are persisted; a trailing newline must not slip past the ``$`` anchor."""
    with pytest.raises(SagaDefinitionError, match="saga name"):
        Saga(name)


@pytest.mark.parametrize("name", ["", "1STEP", "_A", "A B", "A" * 101, "A:B"])
def test_bad_step_names_are_rejected_clearly(name: str) -> None:
    with pytest.raises(SagaDefinitionError, match=r"saga 'demo': step name .* must be 1-100"):
        Saga("demo").step(name)


def test_step_name_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(SagaDefinitionError, match="step name"):
        Saga("demo").step("STEP\n")


@pytest.mark.parametrize("timeout", [timedelta(0), timedelta(seconds=-1)])
def test_non_positive_saga_timeout_is_rejected(timeout: timedelta) -> None:
    with pytest.raises(SagaDefinitionError, match=r"saga 'demo': timeout must be positive"):
        Saga("demo", timeout=timeout)


@pytest.mark.parametrize("timeout", [timedelta(0), timedelta(milliseconds=-5)])
def test_non_positive_step_timeout_is_rejected(timeout: timedelta) -> None:
    with pytest.raises(SagaDefinitionError, match=r"step 'A' timeout must be positive"):
        Saga("demo").step("A", timeout=timeout)


def test_definition_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="saga name"):
        Saga("BAD")


# --- structure -----------------------------------------------------------------------------------


def test_duplicate_step_name_is_rejected() -> None:
    saga = saga_with("A")
    with pytest.raises(SagaDefinitionError, match=r"saga 'demo': duplicate step name 'A'"):
        saga.step("A")


def test_reusing_one_step_decorator_cannot_register_a_duplicate() -> None:
    """The same ``saga.step("A")`` decorator applied twice must not create two steps "A"."""
    saga = Saga("demo")
    decorator = saga.step("A")
    decorator(act)
    with pytest.raises(SagaDefinitionError, match="duplicate step name 'A'"):
        decorator(undo)
    assert [s.name for s in saga.steps] == ["A"]


def test_second_pivot_is_rejected_naming_the_first() -> None:
    saga = saga_with("A", "P", pivot="P")
    with pytest.raises(SagaDefinitionError, match=r"step 'Q' cannot be a pivot, 'P' already is"):
        saga.step("Q", pivot=True)


def test_pivot_decorators_created_up_front_cannot_make_two_pivots() -> None:
    saga = Saga("demo")
    first, second = saga.step("P", pivot=True), saga.step("Q", pivot=True)
    first(act)
    with pytest.raises(SagaDefinitionError, match="pivot"):
        second(act)
    assert [s.kind for s in saga.steps] == [StepKind.PIVOT]


def test_non_async_action_is_rejected_and_not_registered() -> None:
    saga = Saga("demo")
    with pytest.raises(SagaDefinitionError, match=r"step 'A' must be an async function"):
        saga.step("A")(sync_fn)  # type: ignore[type-var]
    assert saga.steps == ()


def test_saga_without_steps_fails_validation() -> None:
    with pytest.raises(SagaDefinitionError, match=r"saga 'demo' has no steps"):
        Saga("demo").validate()


def test_saga_with_steps_passes_validation() -> None:
    saga_with("A").validate()


def test_steps_keep_their_order_and_index() -> None:
    saga = saga_with("A", "B", "C")
    assert [(s.name, s.index) for s in saga.steps] == [("A", 0), ("B", 1), ("C", 2)]
    assert saga.step_named("B") is saga.steps[1]


def test_step_named_unknown_raises_key_error() -> None:
    with pytest.raises(KeyError, match="no step 'Z'"):
        saga_with("A").step_named("Z")


# --- kinds ---------------------------------------------------------------------------------------


def test_kinds_follow_the_pivot() -> None:
    saga = saga_with("A", "B", "P", "C", "D", pivot="P")
    assert [s.kind for s in saga.steps] == [
        StepKind.COMPENSATABLE,
        StepKind.COMPENSATABLE,
        StepKind.PIVOT,
        StepKind.RETRIABLE,
        StepKind.RETRIABLE,
    ]
    assert saga.pivot_index == 2


def test_without_a_pivot_every_step_is_compensatable() -> None:
    saga = saga_with("A", "B", "C")
    assert {s.kind for s in saga.steps} == {StepKind.COMPENSATABLE}
    assert saga.pivot_index is None


def test_first_step_may_be_the_pivot() -> None:
    saga = saga_with("P", "A", pivot="P")
    assert [s.kind for s in saga.steps] == [StepKind.PIVOT, StepKind.RETRIABLE]


# --- compensations -------------------------------------------------------------------------------


def test_bare_compensate_decorator_registers_and_returns_the_function() -> None:
    saga = Saga("demo")
    handle = saga.step("A")(act)
    assert handle.compensate(undo) is undo
    assert saga.steps[0].compensation is undo


def test_called_compensate_decorator_sets_transactional() -> None:
    saga = Saga("demo")
    handle = saga.step("A")(act)
    assert handle.compensate(transactional=True)(undo) is undo
    step = saga.steps[0]
    assert (step.transactional, step.compensation_transactional) == (False, True)


@pytest.mark.parametrize("transactional", [True, False])
def test_compensation_inherits_the_steps_transactional_flag(transactional: bool) -> None:
    saga = Saga("demo")
    saga.step("A", transactional=transactional)(act).compensate(undo)
    assert saga.steps[0].compensation_transactional is transactional


def test_empty_compensate_call_also_inherits() -> None:
    saga = Saga("demo")
    saga.step("A", transactional=True)(act).compensate()(undo)
    assert saga.steps[0].compensation_transactional is True


def test_transactional_step_may_have_a_non_transactional_compensation() -> None:
    saga = Saga("demo")
    saga.step("A", transactional=True)(act).compensate(transactional=False)(undo)
    assert saga.steps[0].compensation_transactional is False


def test_pivot_may_have_a_compensation() -> None:
    """A pivot that fails for good is compensated itself; it may have partly acted."""
    saga = Saga("demo")
    saga.step("P", pivot=True)(act).compensate(undo)
    assert saga.steps[0].compensation is undo


def test_compensation_after_the_pivot_is_rejected() -> None:
    saga = Saga("demo")
    saga.step("P", pivot=True)(act)
    handle = saga.step("C")(act)
    with pytest.raises(
        SagaDefinitionError, match=r"step 'C' comes after the pivot and is never compensated"
    ):
        handle.compensate(undo)
    assert saga.steps[1].compensation is None


def test_second_compensation_is_rejected() -> None:
    saga = Saga("demo")
    handle = saga.step("A")(act)
    handle.compensate(undo)
    with pytest.raises(SagaDefinitionError, match=r"step 'A' already has a compensation"):
        handle.compensate(undo)


def test_non_async_compensation_is_rejected() -> None:
    saga = Saga("demo")
    handle = saga.step("A")(act)
    with pytest.raises(SagaDefinitionError, match=r"compensation of 'A' must be an async"):
        handle.compensate(sync_fn)
    assert saga.steps[0].compensation is None


def test_compensating_an_earlier_step_later_keeps_its_kind() -> None:
    saga = Saga("demo")
    first = saga.step("A")(act)
    saga.step("P", pivot=True)(act)
    first.compensate(undo)
    assert (saga.steps[0].kind, saga.steps[0].compensation) == (StepKind.COMPENSATABLE, undo)


# --- policies, handles, context ------------------------------------------------------------------


def test_policy_for_prefers_the_steps_own_policy() -> None:
    saga_policy = RetryPolicy(max_attempts=2)
    step_policy = RetryPolicy(max_attempts=7)
    saga = Saga("demo", retry=saga_policy)
    saga.step("A")(act)
    saga.step("B", retry=step_policy)(act)
    assert saga.policy_for(saga.steps[0]) is saga_policy
    assert saga.policy_for(saga.steps[1]) is step_policy


def test_saga_default_policy_is_the_design_default() -> None:
    assert Saga("demo").retry == RetryPolicy()


def test_step_options_are_recorded() -> None:
    saga = Saga("demo", timeout=timedelta(minutes=5))
    saga.step("A", transactional=True, timeout=timedelta(seconds=3))(act)
    step = saga.steps[0]
    assert (saga.timeout, step.transactional, step.timeout, step.action) == (
        timedelta(minutes=5),
        True,
        timedelta(seconds=3),
        act,
    )


async def test_step_handle_is_still_callable() -> None:
    handle = Saga("demo").step("A")(act)
    assert isinstance(handle, StepHandle)
    assert (handle.name, handle.action, handle.__wrapped__) == ("A", act, act)
    assert await handle(make_ctx("A")) == {"seen": "A"}


def test_step_handle_keeps_the_docstring() -> None:
    async def documented(ctx: StepContext) -> None:
        """Reserve the quota."""

    assert Saga("demo").step("A")(documented).__doc__ == "Reserve the quota."


def test_session_in_a_non_transactional_step_raises_clearly() -> None:
    with pytest.raises(RuntimeError, match=r"step 'A' of saga 'demo' is not transactional"):
        _ = make_ctx("A").session


def test_session_is_given_to_a_transactional_step() -> None:
    marker = object()
    assert make_ctx("A", session=marker).session is marker


def test_idempotency_key_is_stable_and_distinct() -> None:
    assert idempotency_key("run-1", "A") == idempotency_key("run-1", "A") == "run-1:A"
    keys = {
        idempotency_key("run-1", "A"),
        idempotency_key("run-1", "B"),
        idempotency_key("run-2", "A"),
        idempotency_key("run-1", "A", compensating=True),
    }
    assert len(keys) == 4
    assert idempotency_key("run-1", "A", compensating=True) == "run-1:A:undo"


def test_context_is_frozen() -> None:
    ctx = make_ctx()
    with pytest.raises(AttributeError):
        ctx.attempt = 2  # type: ignore[misc]
