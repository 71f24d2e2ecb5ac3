"""Forking a finished run: when it is allowed, what force overrides, the fork's data (no I/O)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cloudphone.saga import EventKind, OperatorActionError, SagaEvent, SagaStatus, operators
from cloudphone.saga.history import StepsDone, fork_start
from tests.unit.test_migrate import V1, done
from tests.unit.test_operators import NOW, make_run

S = SagaStatus
K = EventKind


def completed(**changes: Any) -> Any:
    return make_run(**{"status": S.COMPLETED, "current_step": None, **changes})


@pytest.mark.parametrize("status", [S.PENDING, S.RUNNING, S.COMPENSATING])
def test_only_a_finished_run_can_be_forked_even_with_force(status: SagaStatus) -> None:
    with pytest.raises(OperatorActionError, match=f"it is {status}; only a finished run"):
        operators.check_fork(make_run(status=status), done("A"), V1, "B", force=True)


@pytest.mark.parametrize("status", [S.COMPLETED, S.COMPENSATED, S.TIMED_OUT, S.FAILED])
def test_every_terminal_status_can_be_forked(status: SagaStatus) -> None:
    assert operators.check_fork(make_run(status=status), done(), V1, "A", force=False) == []


def test_a_step_the_version_lacks_is_refused_even_with_force() -> None:
    with pytest.raises(OperatorActionError, match="has no step 'Z' \\(steps: A, B, P, C\\)"):
        operators.check_fork(completed(), done("A", "B", "P", "C"), V1, "Z", force=True)


def test_after_a_completed_pivot_a_fork_needs_no_force() -> None:
    assert operators.check_fork(completed(), done("A", "B", "P", "C"), V1, "C", force=False) == []


@pytest.mark.parametrize("from_step", ["A", "B", "P"])
def test_up_to_a_pivot_the_original_completed_only_with_force(from_step: str) -> None:
    steps = done("A", "B", "P", "C")
    with pytest.raises(OperatorActionError, match="not after the pivot P, which the original"):
        operators.check_fork(completed(), steps, V1, from_step, force=False)
    (reason,) = operators.check_fork(completed(), steps, V1, from_step, force=True)
    assert reason.startswith(f"{from_step} is not after the pivot P")


def test_a_pivot_the_original_never_passed_may_be_run_again() -> None:
    """Compensated before its pivot: forking from the first step redoes it all, no force."""
    undone = done("A", "B", undone=["A", "B"])
    assert operators.check_fork(completed(status=S.COMPENSATED), undone, V1, "A", False) == []


def test_after_a_step_the_original_undid_only_with_force() -> None:
    run = completed(status=S.COMPENSATED)
    with pytest.raises(OperatorActionError, match="the original undid A, which the fork"):
        operators.check_fork(run, done("A", "B", undone=["A", "B"]), V1, "B", force=False)


def test_after_a_step_the_original_never_completed_only_with_force() -> None:
    run = completed(status=S.FAILED)
    with pytest.raises(OperatorActionError, match="the original never completed B"):
        operators.check_fork(run, done("A"), V1, "P", force=False)
    assert operators.check_fork(run, done("A"), V1, "P", force=True) == [
        "the original never completed B"
    ]


def test_the_original_records_the_fork_and_what_force_overrode() -> None:
    plain = operators.forked(completed(), "fork-1", "C", NOW, "ops", "redo the email", [])
    assert (plain.values, plain.bump_epoch) == ({"updated_at": NOW}, False)
    (event,) = plain.events
    assert (event.kind, event.step, event.at) == (K.RUN_FORKED, "C", NOW)
    assert event.detail == {
        "fork": "fork-1",
        "from_step": "C",
        "actor": "ops",
        "note": "redo the email",
    }
    forced = operators.forked(completed(), "fork-2", "A", NOW, None, None, ["why not"])
    assert forced.events[0].detail == {
        "fork": "fork-2",
        "from_step": "A",
        "forced": True,
        "overrode": ["why not"],
    }


def event(seq: int, kind: EventKind, step: str | None, **detail: Any) -> SagaEvent:
    return SagaEvent(seq, kind, step, 1, detail, NOW + timedelta(seconds=seq))


HISTORY = [
    event(1, K.SAGA_STARTED, None),
    event(2, K.STEP_SUCCEEDED, "A"),
    event(3, K.STEP_FAILED, "B", error={"type": "Boom"}),
    event(4, K.STEP_SUCCEEDED, "B"),
    event(5, K.STEP_SUCCEEDED, "P", pivot=True),
    event(6, K.STEP_SUCCEEDED, "C"),
]
INPUT = {"input": 1, "price": 10}
OUTPUTS = {"A": {"hold": "h1"}, "B": {"quote": 3}, "P": {"charge": "c1"}, "C": None}


def test_the_history_says_which_steps_were_done_undone_and_the_pivot() -> None:
    undo = event(7, K.COMPENSATION_SUCCEEDED, "A")
    steps = StepsDone.of([*HISTORY, undo, event(8, K.STEP_SUCCEEDED, "A", output={})])
    assert steps == StepsDone(("A", "B", "P", "C"), frozenset({"A"}), "P")


@pytest.mark.parametrize(
    ("rerun", "kept"),
    [
        (["C"], ["A", "B", "P"]),
        (["P", "C"], ["A", "B"]),
        (["B", "P", "C"], ["A"]),
        (["A", "B", "P", "C"], []),
    ],
)
def test_a_fork_starts_with_the_input_and_the_outputs_of_the_steps_before(
    rerun: list[str], kept: list[str]
) -> None:
    run = completed(input=INPUT, outputs=OUTPUTS)
    assert fork_start(run, HISTORY, rerun) == (INPUT, {step: OUTPUTS[step] for step in kept})
    assert run.outputs == OUTPUTS, "the run's own outputs are left alone"


def test_the_data_before_a_step_is_unknown_for_a_run_from_before_kept_outputs() -> None:
    """A step that succeeded has no kept output: the run predates per-step outputs."""
    old = [event(1, K.SAGA_STARTED, None), event(2, K.STEP_SUCCEEDED, "A")]
    assert fork_start(completed(input={"a": 1}, outputs={}), old, ["B"]) is None
