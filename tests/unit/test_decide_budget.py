"""Retry budgets in the pure decisions: when a step's failures began, and when they must stop."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloudphone.saga import EventKind, RetryLater, RetryPolicy, Saga, SagaStatus, decide
from cloudphone.saga.records import ErrorInfo
from tests.unit.test_decide import NOW, STARTED, Boom, act, half, make_saga, make_state

S = SagaStatus


def forward_saga(c_retry: RetryPolicy | None = None) -> Saga:
    """A, then the pivot P, then C (with its own policy if given)."""
    saga = Saga("demo", retry=RetryPolicy(max_attempts=3))
    saga.step("A")(act)
    saga.step("P", pivot=True)(act)
    saga.step("C", retry=c_retry)(act)
    return saga


def test_the_first_failure_starts_the_budget_and_later_ones_keep_its_start() -> None:
    saga = make_saga(("A", "P", "C"), pivot="P")
    first = decide.on_step_failure(make_state(saga, "C"), saga, Boom("x"), STARTED, NOW, half)
    assert first.retry_since == NOW
    earlier = NOW - timedelta(minutes=30)
    again = decide.on_step_failure(
        make_state(saga, "C", attempt=9, retry_since=earlier), saga, Boom("x"), STARTED, NOW, half
    )
    assert (again.status, again.retry_since) == (S.RUNNING, earlier)


def test_failures_before_the_pivot_are_timed_too_but_bounded_by_attempts() -> None:
    saga = make_saga()
    progress = decide.on_step_failure(make_state(saga, "A"), saga, Boom("x"), STARTED, NOW, half)
    assert (progress.status, progress.retry_since) == (S.RUNNING, NOW)


def test_a_postponed_step_does_not_spend_its_budget() -> None:
    saga = make_saga(("A", "P", "C"), pivot="P")
    state = make_state(saga, "C")
    progress = decide.on_step_failure(state, saga, RetryLater("polling"), STARTED, NOW, half)
    assert progress.retry_since is None


def test_moving_on_to_another_step_clears_the_budget() -> None:
    saga = make_saga(("A", "P", "C"), pivot="P")
    state = make_state(saga, "A", retry_since=NOW - timedelta(seconds=5))
    assert decide.on_step_success(state, saga, None, STARTED, NOW).retry_since is None
    turned = decide.begin_compensation(state, saga, "failed", NOW, [])
    assert turned.retry_since is None, "the compensation inherited the step's failures"


def test_a_step_after_the_pivot_fails_for_an_operator_once_its_budget_is_spent() -> None:
    saga = forward_saga(RetryPolicy(budget=timedelta(hours=1)))
    since = NOW - timedelta(hours=1)
    state = make_state(saga, "C", attempt=60, retry_since=since)
    progress = decide.on_step_failure(state, saga, Boom("still down"), STARTED, NOW, half)
    assert (progress.status, progress.step, progress.finished) == (S.FAILED, "C", True)
    assert progress.error == ErrorInfo("Boom", "still down", "C")
    assert progress.retry_since == since
    failed = progress.events[-1]
    assert failed.kind is EventKind.SAGA_FAILED
    assert failed.detail == {
        "reason": (
            f"retry budget of 1:00:00 ran out: C has failed since {since.isoformat()}; "
            "last error: Boom in C: still down"
        ),
        "budget_exhausted": True,
        "failing_since": since.isoformat(),
    }
    younger = make_state(saga, "C", attempt=60, retry_since=since + timedelta(seconds=1))
    assert decide.on_step_failure(younger, saga, Boom("x"), STARTED, NOW, half).status is S.RUNNING


def test_the_sagas_policy_gives_the_budget_of_steps_without_their_own() -> None:
    saga = forward_saga()
    saga.retry = RetryPolicy(budget=timedelta(minutes=5))
    state = make_state(saga, "C", retry_since=NOW - timedelta(minutes=5))
    assert decide.on_step_failure(state, saga, Boom("x"), STARTED, NOW, half).status is S.FAILED


def test_no_budget_retries_forever() -> None:
    saga = forward_saga(RetryPolicy(budget=None))
    state = make_state(saga, "C", retry_since=NOW - timedelta(days=400))
    assert decide.on_step_failure(state, saga, Boom("x"), STARTED, NOW, half).status is S.RUNNING


@pytest.mark.parametrize(
    ("since", "status"),
    [(timedelta(hours=24), S.FAILED), (timedelta(hours=23, minutes=59), S.COMPENSATING)],
)
def test_a_compensation_fails_for_an_operator_once_the_default_day_is_spent(
    since: timedelta, status: SagaStatus
) -> None:
    saga = make_saga()
    saga.retry = RetryPolicy()
    state = make_state(saga, "B", status=S.COMPENSATING, cause="failed", retry_since=NOW - since)
    progress = decide.on_compensation_failure(state, saga, Boom("s3"), STARTED, NOW, half)
    assert progress.status is status
    if status is S.FAILED:
        reason = progress.events[-1].detail["reason"]
        assert reason.startswith("compensation failed: retry budget of 1 day, 0:00:00 ran out")
    else:
        assert progress.retry_since == NOW - since
