"""Pure decisions of the runner: given a run and an outcome, the exact Progress to commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudphone.saga import EventKind, NonRetryableError, RetryPolicy, Saga, SagaStatus, decide
from cloudphone.saga.progress import Progress, RunState
from cloudphone.saga.records import ErrorInfo
from cloudphone.saga.state import can_transition

S = SagaStatus
K = EventKind
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
STARTED = NOW - timedelta(seconds=2)

POLICY = RetryPolicy(
    max_attempts=3,
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2,
    max_interval=timedelta(seconds=10),
    non_retryable=(KeyError,),
)
"""Full jitter; with ``rand`` fixed at 0.5 the delays are 0.5 s, 1 s, 2 s … capped at 5 s."""


def half() -> float:
    return 0.5


class Boom(Exception):
    pass


async def act(ctx: Any) -> None:
    return None


async def undo(ctx: Any) -> None:
    return None


def make_saga(
    steps: Sequence[str] = ("A", "B", "C"),
    *,
    pivot: str | None = None,
    compensated: Sequence[str] | None = None,
) -> Saga:
    """Steps with compensations on ``compensated`` (default: every step up to the pivot)."""
    saga = Saga("demo", retry=POLICY, timeout=timedelta(minutes=1))
    cut = list(steps).index(pivot) + 1 if pivot else len(steps)
    with_undo = set(steps[:cut] if compensated is None else compensated)
    for name in steps:
        handle = saga.step(name, pivot=name == pivot)(act)
        if name in with_undo:
            handle.compensate(undo)
    return saga


def make_state(saga: Saga, step: str = "A", cause: str | None = None, **changes: Any) -> RunState:
    """A claimed run at ``step`` (attempt 1, RUNNING, no deadline) with ``changes`` applied."""
    base = RunState(
        id="run-1",
        saga_type=saga.name,
        status=S.RUNNING,
        step_index=saga.step_named(step).index,
        step=step,
        attempt=1,
        input={"input": 1},
        outputs={},
        error=None,
        compensation_cause=cause,
        epoch=3,
        created_at=NOW - timedelta(minutes=1),
        deadline_at=None,
        deadline_noted=False,
        cancel_requested=False,
    )
    return replace(base, **changes)


def kinds(progress: Progress) -> list[tuple[EventKind, str | None, int | None]]:
    assert all(event.at == NOW for event in progress.events)
    return [(e.kind, e.step, e.attempt) for e in progress.events]


def assert_released_at(progress: Progress, at: datetime | None, *, finished: bool) -> None:
    assert (progress.keep_lease, progress.next_run_at, progress.finished) == (False, at, finished)


def assert_continues(progress: Progress) -> None:
    """The worker keeps the lease and goes on at once."""
    assert (progress.keep_lease, progress.next_run_at, progress.finished) == (True, NOW, False)


# --- forward success -----------------------------------------------------------------------------


def test_success_moves_to_the_next_step_keeping_the_output_under_the_step() -> None:
    saga = make_saga()
    state = make_state(
        saga, "A", attempt=2, error=ErrorInfo("Boom", "earlier", "A"), retry_since=STARTED
    )
    progress = decide.on_step_success(state, saga, {"a": True}, STARTED, NOW)
    assert (progress.status, progress.step_index, progress.step, progress.attempt) == (
        S.RUNNING,
        1,
        "B",
        1,
    )
    assert (progress.output_step, progress.output) == ("A", {"a": True})
    assert (progress.error, progress.retry_since) == (None, None), "the next step starts afresh"
    assert_continues(progress)
    assert kinds(progress) == [(K.STEP_SUCCEEDED, "A", 2)]
    # The event stays small: the output lives in the run's outputs, not in the history.
    assert progress.events[0].detail == {"started_at": STARTED.isoformat(), "duration_ms": 2000.0}


@pytest.mark.parametrize("output", [None, {}])
def test_an_empty_output_is_recorded_as_such(output: dict[str, Any] | None) -> None:
    saga = make_saga()
    progress = decide.on_step_success(make_state(saga), saga, output, STARTED, NOW)
    assert (progress.output_step, progress.output) == ("A", output)


def test_last_step_success_completes_and_releases() -> None:
    saga = make_saga()
    progress = decide.on_step_success(make_state(saga, "C"), saga, {"c": 1}, STARTED, NOW)
    assert (progress.status, progress.step_index, progress.step) == (S.COMPLETED, None, None)
    assert (progress.output_step, progress.output) == ("C", {"c": 1})
    assert_released_at(progress, None, finished=True)
    assert kinds(progress) == [(K.STEP_SUCCEEDED, "C", 1), (K.SAGA_COMPLETED, None, None)]


@pytest.mark.parametrize(("step", "late"), [("A", True), ("C", False)])
def test_success_records_no_deadline_note_before_pivot_or_deadline(step: str, late: bool) -> None:
    """Before the pivot the deadline is the runner's to enforce, not a DEADLINE_PASSED note."""
    saga = make_saga(("A", "B", "P", "C", "D"), pivot="P")
    deadline = NOW + timedelta(seconds=-1 if late else 1)
    progress = decide.on_step_success(
        make_state(saga, step, deadline_at=deadline), saga, None, STARTED, NOW
    )
    assert kinds(progress) == [(K.STEP_SUCCEEDED, step, 1)]
    assert progress.deadline_noted is False


@pytest.mark.parametrize("step", ["P", "C"])
def test_post_pivot_success_after_the_deadline_is_noted_once(step: str) -> None:
    saga = make_saga(("A", "P", "C", "D"), pivot="P")
    deadline = NOW - timedelta(seconds=1)
    progress = decide.on_step_success(
        make_state(saga, step, deadline_at=deadline), saga, None, STARTED, NOW
    )
    assert kinds(progress) == [(K.STEP_SUCCEEDED, step, 1), (K.DEADLINE_PASSED, None, None)]
    assert progress.events[1].detail["deadline_at"] == deadline.isoformat()
    assert progress.deadline_noted is True
    assert progress.status is S.RUNNING

    noted = make_state(saga, "C", deadline_at=deadline, deadline_noted=True)
    again = decide.on_step_success(noted, saga, None, STARTED, NOW)
    assert kinds(again) == [(K.STEP_SUCCEEDED, "C", 1)]
    assert again.deadline_noted is True


# --- forward failure before and at the pivot -----------------------------------------------------


def test_retryable_failure_schedules_a_durable_retry() -> None:
    saga = make_saga()
    progress = decide.on_step_failure(make_state(saga, "B"), saga, Boom("down"), STARTED, NOW, half)
    assert (progress.status, progress.step_index, progress.step, progress.attempt) == (
        S.RUNNING,
        1,
        "B",
        2,
    )
    assert progress.error == ErrorInfo("Boom", "down", "B")
    assert_released_at(progress, NOW + timedelta(seconds=0.5), finished=False)
    assert kinds(progress) == [(K.STEP_FAILED, "B", 1), (K.RETRY_SCHEDULED, "B", 2)]
    failed, scheduled = progress.events
    assert failed.detail == {
        "error": {"type": "Boom", "message": "down", "step": "B"},
        "started_at": STARTED.isoformat(),
        "duration_ms": 2000.0,
    }
    expected_at = (NOW + timedelta(seconds=0.5)).isoformat()
    assert scheduled.detail == {"next_run_at": expected_at, "delay_ms": 500.0}


def test_second_failure_waits_longer() -> None:
    saga = make_saga()
    progress = decide.on_step_failure(make_state(saga, attempt=2), saga, Boom(), STARTED, NOW, half)
    assert (progress.next_run_at, progress.attempt) == (NOW + timedelta(seconds=1), 3)


def test_retry_is_capped_at_the_deadline() -> None:
    saga = make_saga()
    deadline = NOW + timedelta(milliseconds=200)
    state = make_state(saga, "A", deadline_at=deadline)
    progress = decide.on_step_failure(state, saga, Boom(), STARTED, NOW, half)
    assert progress.next_run_at == deadline
    assert progress.events[-1].detail == {"next_run_at": deadline.isoformat(), "delay_ms": 200.0}


def test_exhausted_attempts_compensate_starting_at_the_failed_step() -> None:
    saga = make_saga()
    state = make_state(saga, "B", attempt=3)
    progress = decide.on_step_failure(state, saga, Boom("gone"), STARTED, NOW, half)
    assert (progress.status, progress.step_index, progress.step, progress.attempt) == (
        S.COMPENSATING,
        1,
        "B",
        1,
    )
    assert progress.compensation_cause == decide.CAUSE_FAILED
    assert progress.error == ErrorInfo("Boom", "gone", "B")
    assert_continues(progress)
    assert kinds(progress) == [(K.STEP_FAILED, "B", 3), (K.COMPENSATION_STARTED, "B", None)]
    assert progress.events[1].detail == {"cause": "failed"}


def test_compensation_skips_steps_without_one() -> None:
    saga = make_saga(("A", "B", "C"), compensated=("A",))
    state = make_state(saga, "C", attempt=3)
    progress = decide.on_step_failure(state, saga, Boom(), STARTED, NOW, half)
    assert (progress.status, progress.step_index, progress.step) == (S.COMPENSATING, 0, "A")
    assert kinds(progress)[-1] == (K.COMPENSATION_STARTED, "C", None)


def test_no_compensations_at_all_ends_compensated_directly() -> None:
    saga = make_saga(compensated=())
    progress = decide.on_step_failure(
        make_state(saga, "B", attempt=3), saga, Boom("x"), STARTED, NOW, half
    )
    assert progress.status is S.COMPENSATED
    assert (progress.compensation_cause, progress.error) == ("failed", ErrorInfo("Boom", "x", "B"))
    assert_released_at(progress, None, finished=True)
    assert kinds(progress) == [
        (K.STEP_FAILED, "B", 3),
        (K.COMPENSATION_STARTED, "B", None),
        (K.SAGA_COMPENSATED, None, None),
    ]
    assert progress.events[-1].detail == {"cause": "failed"}


@pytest.mark.parametrize("error", [NonRetryableError("card declined"), KeyError("listed")])
def test_non_retryable_error_skips_remaining_attempts(error: Exception) -> None:
    saga = make_saga()
    progress = decide.on_step_failure(make_state(saga, "B"), saga, error, STARTED, NOW, half)
    assert (progress.status, progress.step, progress.compensation_cause) == (
        S.COMPENSATING,
        "B",
        "failed",
    )
    assert kinds(progress) == [(K.STEP_FAILED, "B", 1), (K.COMPENSATION_STARTED, "B", None)]


def test_failed_pivot_is_compensated_itself() -> None:
    saga = make_saga(("A", "P", "C"), pivot="P")
    state = make_state(saga, "P", attempt=3)
    progress = decide.on_step_failure(state, saga, Boom(), STARTED, NOW, half)
    assert (progress.status, progress.step) == (S.COMPENSATING, "P")


def test_failure_past_the_deadline_compensates_as_timed_out() -> None:
    """Attempts remain, but the deadline has passed: no retry, turn back."""
    saga = make_saga()
    deadline = NOW - timedelta(milliseconds=1)
    state = make_state(saga, "B", deadline_at=deadline)
    progress = decide.on_step_failure(state, saga, Boom(), STARTED, NOW, half)
    assert (progress.status, progress.step, progress.compensation_cause) == (
        S.COMPENSATING,
        "B",
        "timed_out",
    )
    assert kinds(progress) == [
        (K.STEP_FAILED, "B", 1),
        (K.DEADLINE_EXCEEDED, "B", None),
        (K.COMPENSATION_STARTED, "B", None),
    ]
    assert progress.events[1].detail == {"deadline_at": deadline.isoformat()}


# --- forward failure after the pivot -------------------------------------------------------------


def test_post_pivot_failure_retries_beyond_max_attempts() -> None:
    saga = make_saga(("A", "P", "C"), pivot="P")
    progress = decide.on_step_failure(
        make_state(saga, "C", attempt=9), saga, Boom(), STARTED, NOW, half
    )
    assert (progress.status, progress.step, progress.attempt) == (S.RUNNING, "C", 10)
    assert_released_at(progress, NOW + timedelta(seconds=5), finished=False)  # capped, jittered
    assert kinds(progress) == [(K.STEP_FAILED, "C", 9), (K.RETRY_SCHEDULED, "C", 10)]


def test_post_pivot_retry_is_not_capped_by_the_deadline_and_noted_once() -> None:
    saga = make_saga(("P", "C"), pivot="P")
    state = make_state(saga, "C", deadline_at=NOW - timedelta(seconds=1))
    progress = decide.on_step_failure(state, saga, Boom(), STARTED, NOW, half)
    assert progress.next_run_at == NOW + timedelta(seconds=0.5)
    assert progress.deadline_noted is True
    assert kinds(progress) == [
        (K.STEP_FAILED, "C", 1),
        (K.DEADLINE_PASSED, None, None),
        (K.RETRY_SCHEDULED, "C", 2),
    ]

    noted = make_state(saga, "C", deadline_at=NOW - timedelta(seconds=1), deadline_noted=True)
    again = decide.on_step_failure(noted, saga, Boom(), STARTED, NOW, half)
    assert [k for k, _, _ in kinds(again)] == [K.STEP_FAILED, K.RETRY_SCHEDULED]
    assert again.deadline_noted is True


def test_post_pivot_non_retryable_failure_fails_keeping_the_step() -> None:
    saga = make_saga(("A", "P", "C", "D"), pivot="P")
    progress = decide.on_step_failure(
        make_state(saga, "C", attempt=2), saga, NonRetryableError("order gone"), STARTED, NOW, half
    )
    assert (progress.status, progress.step_index, progress.step) == (S.FAILED, 2, "C")
    assert progress.error == ErrorInfo("NonRetryableError", "order gone", "C")
    assert progress.compensation_cause is None
    assert_released_at(progress, None, finished=True)
    assert kinds(progress) == [(K.STEP_FAILED, "C", 2), (K.SAGA_FAILED, None, None)]
    assert progress.events[-1].detail == {"reason": "NonRetryableError in C: order gone"}


# --- compensation --------------------------------------------------------------------------------


def test_compensation_success_walks_down_to_the_next_compensation() -> None:
    saga = make_saga(("A", "B", "C"), compensated=("A", "C"))
    state = make_state(saga, "C", status=S.COMPENSATING, cause="failed", attempt=2)
    progress = decide.on_compensation_success(state, saga, STARTED, NOW)
    assert (progress.status, progress.step_index, progress.step, progress.attempt) == (
        S.COMPENSATING,
        0,
        "A",
        1,
    )
    assert progress.compensation_cause == "failed"
    assert_continues(progress)
    assert kinds(progress) == [(K.COMPENSATION_SUCCEEDED, "C", 2)]


@pytest.mark.parametrize(
    ("cause", "status", "kind"),
    [
        ("failed", S.COMPENSATED, K.SAGA_COMPENSATED),
        ("cancelled", S.COMPENSATED, K.SAGA_COMPENSATED),
        ("timed_out", S.TIMED_OUT, K.SAGA_TIMED_OUT),
    ],
)
def test_last_compensation_finishes_by_cause(cause: str, status: SagaStatus, kind: K) -> None:
    saga = make_saga()
    error = ErrorInfo("Boom", "why", "B")
    state = make_state(saga, "A", status=S.COMPENSATING, cause=cause, error=error)
    progress = decide.on_compensation_success(state, saga, STARTED, NOW)
    assert (progress.status, progress.compensation_cause, progress.error) == (status, cause, error)
    assert_released_at(progress, None, finished=True)
    assert kinds(progress) == [(K.COMPENSATION_SUCCEEDED, "A", 1), (kind, None, None)]
    assert progress.events[-1].detail == {"cause": cause}


def test_compensation_failure_retries_without_limit() -> None:
    saga = make_saga()
    state = make_state(
        saga,
        "A",
        status=S.COMPENSATING,
        cause="timed_out",
        attempt=40,
        deadline_at=NOW - timedelta(hours=1),
    )
    progress = decide.on_compensation_failure(state, saga, Boom("s3 down"), STARTED, NOW, half)
    assert (progress.status, progress.step, progress.attempt) == (S.COMPENSATING, "A", 41)
    assert progress.compensation_cause == "timed_out"
    assert progress.error == ErrorInfo("Boom", "s3 down", "A")
    assert_released_at(progress, NOW + timedelta(seconds=5), finished=False)
    assert kinds(progress) == [(K.COMPENSATION_FAILED, "A", 40), (K.RETRY_SCHEDULED, "A", 41)]
    assert progress.events[0].detail["error"] == progress.error.to_dict()


@pytest.mark.parametrize("error", [NonRetryableError("cannot undo"), KeyError("listed")])
def test_non_retryable_compensation_failure_fails_never_compensated(error: Exception) -> None:
    saga = make_saga()
    state = make_state(saga, "B", status=S.COMPENSATING, cause="failed")
    progress = decide.on_compensation_failure(state, saga, error, STARTED, NOW, half)
    assert (progress.status, progress.step_index, progress.step) == (S.FAILED, 1, "B")
    assert progress.compensation_cause == "failed"  # an operator retry resumes compensating
    assert progress.error == (info := ErrorInfo.from_exception(error, "B"))
    assert_released_at(progress, None, finished=True)
    assert kinds(progress) == [(K.COMPENSATION_FAILED, "B", 1), (K.SAGA_FAILED, None, None)]
    assert progress.events[-1].detail == {"reason": f"compensation failed: {info}"}


# --- deadline, cancel, unknown step --------------------------------------------------------------


def test_deadline_exceeded_compensates_as_timed_out() -> None:
    saga = make_saga()
    deadline = NOW - timedelta(seconds=1)
    state = make_state(saga, "B", attempt=2, deadline_at=deadline)
    progress = decide.on_deadline_exceeded(state, saga, NOW, interrupted_at=STARTED)
    assert (progress.status, progress.step, progress.attempt) == (S.COMPENSATING, "B", 1)
    assert progress.compensation_cause == "timed_out"
    assert progress.error == ErrorInfo(
        "DeadlineExceeded", f"saga deadline {deadline.isoformat()} passed", "B"
    )
    assert kinds(progress) == [
        (K.STEP_FAILED, "B", 2),
        (K.DEADLINE_EXCEEDED, "B", None),
        (K.COMPENSATION_STARTED, "B", None),
    ]
    assert progress.events[2].detail == {"cause": "timed_out"}


def test_deadline_exceeded_between_attempts_has_no_failed_attempt() -> None:
    saga = make_saga(compensated=())
    state = make_state(saga, "B", deadline_at=NOW - timedelta(seconds=1))
    progress = decide.on_deadline_exceeded(state, saga, NOW)
    assert progress.status is S.TIMED_OUT
    assert [k for k, _, _ in kinds(progress)] == [
        K.DEADLINE_EXCEEDED,
        K.COMPENSATION_STARTED,
        K.SAGA_TIMED_OUT,
    ]


def test_cancel_before_the_pivot_compensates_and_clears_the_request() -> None:
    saga = make_saga(("A", "B", "P", "C"), pivot="P")
    state = make_state(saga, "B", attempt=2)
    progress = decide.on_cancel(state, saga, NOW, interrupted_at=STARTED)
    assert (progress.status, progress.step, progress.compensation_cause) == (
        S.COMPENSATING,
        "B",
        "cancelled",
    )
    assert progress.clear_cancel is True
    assert progress.error == ErrorInfo("Cancelled", "cancelled by an operator", "B")
    assert kinds(progress) == [(K.STEP_FAILED, "B", 2), (K.COMPENSATION_STARTED, "B", None)]


def test_cancel_at_the_pivot_still_compensates() -> None:
    """The pivot has not succeeded yet, so the saga may still turn back (pivot included)."""
    saga = make_saga(("A", "P", "C"), pivot="P")
    progress = decide.on_cancel(make_state(saga, "P"), saga, NOW)
    assert (progress.status, progress.step) == (S.COMPENSATING, "P")


def test_cancel_after_the_pivot_is_rejected_and_the_saga_goes_on() -> None:
    saga = make_saga(("A", "P", "C"), pivot="P")
    progress = decide.on_cancel(make_state(saga, "C", attempt=2), saga, NOW, interrupted_at=STARTED)
    assert (progress.status, progress.step_index, progress.step, progress.attempt) == (
        S.RUNNING,
        2,
        "C",
        2,
    )
    assert (progress.clear_cancel, progress.compensation_cause) == (True, None)
    assert_continues(progress)
    assert kinds(progress) == [(K.CANCEL_REJECTED, None, None)]


def test_unknown_step_fails_for_an_operator() -> None:
    saga = make_saga()
    state = make_state(saga, "B")
    state.step = "RENAMED"
    progress = decide.on_unknown_step(state, "RENAMED", NOW)
    assert (progress.status, progress.step) == (S.FAILED, "RENAMED")
    assert progress.error == ErrorInfo(
        "UnknownStep", "the saga definition has no step 'RENAMED'", "RENAMED"
    )
    assert_released_at(progress, None, finished=True)
    assert kinds(progress) == [(K.SAGA_FAILED, None, None)]
    assert progress.events[0].detail == {"reason": str(progress.error)}


# --- helpers and the state machine ---------------------------------------------------------------


def test_past_pivot_only_after_the_pivot_while_going_forward() -> None:
    saga = make_saga(("A", "P", "C"), pivot="P")
    assert [decide.past_pivot(make_state(saga, s), saga) for s in "APC"] == [False, False, True]
    assert decide.past_pivot(make_state(saga, "C", status=S.COMPENSATING), saga) is False
    assert decide.past_pivot(make_state(make_saga(), "C"), make_saga()) is False


def test_next_compensation_includes_the_start_and_clamps() -> None:
    saga = make_saga(("A", "B", "C", "D"), compensated=("A", "C"))
    assert [decide.next_compensation(saga, i) for i in (-1, 0, 1, 2, 3, 99)] == [
        None,
        0,
        0,
        2,
        2,
        2,
    ]


def test_deadline_passed_at_the_instant() -> None:
    saga = make_saga()
    assert decide.deadline_passed(make_state(saga, deadline_at=NOW), NOW)
    assert not decide.deadline_passed(make_state(saga, deadline_at=NOW + timedelta(0, 0, 1)), NOW)
    assert not decide.deadline_passed(make_state(saga), NOW)


@pytest.mark.parametrize("how", ["failure", "deadline", "cancel"])
def test_turning_back_with_nothing_to_undo_is_an_allowed_transition(how: str) -> None:
    """Every decision must respect state.TRANSITIONS, even when no step has a compensation."""
    saga = make_saga(compensated=())
    late = make_state(saga, "B", deadline_at=NOW - timedelta(seconds=1))
    state = make_state(saga, "B", attempt=3) if how == "failure" else late
    progress = {
        "failure": lambda: decide.on_step_failure(state, saga, Boom(), STARTED, NOW, half),
        "deadline": lambda: decide.on_deadline_exceeded(state, saga, NOW),
        "cancel": lambda: decide.on_cancel(state, saga, NOW),
    }[how]()
    assert can_transition(state.status, progress.status), (state.status, progress.status)
