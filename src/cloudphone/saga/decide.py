"""Pure decisions: given a run and what just happened, the Progress to commit.

No I/O and no clock: the runner passes ``now`` and a random source, so every rule here is
unit-tested directly (see ``tests/unit/test_decide.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from cloudphone.saga.decide_parts import (
    attempt_detail,
    base,
    but,
    done_event,
    failed_event,
    finish,
    ms,
    with_deadline_note,
)
from cloudphone.saga.decide_parts import deadline_passed as deadline_passed  # part of this API
from cloudphone.saga.definition import Saga, Step, StepKind
from cloudphone.saga.errors import RetryLater
from cloudphone.saga.progress import NewEvent, Progress, RunState
from cloudphone.saga.records import ErrorInfo, EventKind
from cloudphone.saga.retry import RetryPolicy
from cloudphone.saga.state import SagaStatus

Rand = Callable[[], float]

CAUSE_FAILED = "failed"
CAUSE_TIMED_OUT = "timed_out"
CAUSE_CANCELLED = "cancelled"


def past_pivot(state: RunState, saga: Saga) -> bool:
    """True once the pivot has succeeded (the run can only move forward).

    Without a pivot: once it reached its first retriable step, if it has one.
    """
    forward = saga.forward_from
    return (
        forward is not None
        and state.status is not SagaStatus.COMPENSATING
        and state.step_index >= forward
    )


def on_step_success(
    state: RunState,
    saga: Saga,
    output: Mapping[str, Any] | None,
    started_at: datetime,
    now: datetime,
) -> Progress:
    """A forward step's attempt succeeded: keep its output under it, move to the next step."""
    step = saga.steps[state.step_index]
    done = done_event(EventKind.STEP_SUCCEEDED, step, state, started_at, now)
    if step.kind is StepKind.PIVOT:
        # The history then says the point of no return was passed, whatever the definition.
        done.detail["pivot"] = True
    events = [done]
    nxt = state.step_index + 1
    forward_after = saga.forward_from is not None and nxt >= saga.forward_from
    noted = with_deadline_note(state, saga, now, events, forward_after)
    progress = base(
        state,
        now,
        events,
        output_step=step.name,
        output=dict(output) if output is not None else None,
        error=None,
        deadline_noted=noted,
        retry_since=None,
    )
    if nxt == len(saga.steps):
        return finish(progress, SagaStatus.COMPLETED, EventKind.SAGA_COMPLETED, now)
    return but(
        progress, status=SagaStatus.RUNNING, step_index=nxt, step=saga.steps[nxt].name, attempt=1
    )


def _fail_for_good(
    state: RunState,
    step: Step,
    policy: RetryPolicy,
    info: ErrorInfo,
    now: datetime,
    events: list[NewEvent],
    retryable: bool,
    prefix: str = "",
) -> Progress:
    """A step after the pivot (or a compensation) cannot go on: FAILED for an operator."""
    detail: dict[str, Any] = {"reason": f"{prefix}{info}"}
    if retryable:  # it would have been retried: its budget ran out
        assert state.retry_since is not None
        detail = {
            "reason": (
                f"{prefix}retry budget of {policy.budget} ran out: {step.name} has failed "
                f"since {state.retry_since.isoformat()}; last error: {info}"
            ),
            "budget_exhausted": True,
            "failing_since": state.retry_since.isoformat(),
        }
    progress = base(state, now, events, step=step.name, error=info)
    return finish(progress, SagaStatus.FAILED, EventKind.SAGA_FAILED, now, detail, keep_step=True)


def _schedule_retry(
    state: RunState,
    step: Step,
    delay: timedelta,
    now: datetime,
    events: list[NewEvent],
    info: ErrorInfo,
    cap: datetime | None,
) -> Progress:
    at = now + delay
    if cap is not None and at > cap:
        at = cap  # wake at the deadline, not after it, so it is acted on promptly
    events.append(
        NewEvent(
            EventKind.RETRY_SCHEDULED,
            at=now,
            step=step.name,
            attempt=state.attempt + 1,
            detail={"next_run_at": at.isoformat(), "delay_ms": ms(now, at)},
        )
    )
    return base(
        state,
        now,
        events,
        step=step.name,
        attempt=state.attempt + 1,
        error=info,
        keep_lease=False,
        next_run_at=at,
    )


def _postpone(
    state: RunState,
    saga: Saga,
    step: Step,
    error: RetryLater,
    started_at: datetime,
    now: datetime,
    rand: Rand,
    cap: datetime | None,
) -> Progress:
    """RetryLater: run the same attempt again later; no failure is counted."""
    delay = (
        error.delay if error.delay is not None else saga.policy_for(step).delay(state.attempt, rand)
    )
    at = now + delay
    if cap is not None and at > cap:
        at = cap
    event = NewEvent(
        EventKind.STEP_POSTPONED,
        at=now,
        step=step.name,
        attempt=state.attempt,
        detail={
            "reason": str(error),
            "next_run_at": at.isoformat(),
            **attempt_detail(state, started_at, now),
        },
    )
    return base(state, now, [event], step=step.name, keep_lease=False, next_run_at=at)


def on_step_failure(
    state: RunState,
    saga: Saga,
    error: BaseException,
    started_at: datetime,
    now: datetime,
    rand: Rand,
) -> Progress:
    """A forward step's attempt failed: retry, compensate, or (after the pivot) fail."""
    step = saga.steps[state.step_index]
    if isinstance(error, RetryLater):
        cap = None if step.kind is StepKind.RETRIABLE else state.deadline_at
        return _postpone(state, saga, step, error, started_at, now, rand, cap)
    policy = saga.policy_for(step)
    info = ErrorInfo.from_exception(error, step.name)
    events = [failed_event(step, state, info, started_at, now)]
    retryable = policy.is_retryable(error)
    since = state.retry_since or now
    if step.kind is StepKind.RETRIABLE:
        noted = with_deadline_note(state, saga, now, events, True)
        state_noted = replace(state, deadline_noted=noted, retry_since=since)
        if not retryable or policy.budget_spent(since, now):
            return _fail_for_good(state_noted, step, policy, info, now, events, retryable)
        return _schedule_retry(
            state_noted, step, policy.delay(state.attempt, rand), now, events, info, None
        )
    state = replace(state, retry_since=since)
    late = deadline_passed(state, now)
    if retryable and state.attempt < policy.max_attempts and not late:
        return _schedule_retry(
            state, step, policy.delay(state.attempt, rand), now, events, info, state.deadline_at
        )
    if late:
        assert state.deadline_at is not None
        events.append(
            NewEvent(
                EventKind.DEADLINE_EXCEEDED,
                at=now,
                step=step.name,
                detail={"deadline_at": state.deadline_at.isoformat()},
            )
        )
        return begin_compensation(replace(state, error=info), saga, CAUSE_TIMED_OUT, now, events)
    return begin_compensation(replace(state, error=info), saga, CAUSE_FAILED, now, events)


def on_deadline_exceeded(
    state: RunState, saga: Saga, now: datetime, interrupted_at: datetime | None = None
) -> Progress:
    """The deadline passed before the pivot: stop (cancelling the attempt) and compensate."""
    assert state.deadline_at is not None
    step = saga.steps[state.step_index]
    events: list[NewEvent] = []
    info = ErrorInfo(
        "DeadlineExceeded", f"saga deadline {state.deadline_at.isoformat()} passed", step.name
    )
    if interrupted_at is not None:
        events.append(failed_event(step, state, info, interrupted_at, now))
    events.append(
        NewEvent(
            EventKind.DEADLINE_EXCEEDED,
            at=now,
            step=step.name,
            detail={"deadline_at": state.deadline_at.isoformat()},
        )
    )
    return begin_compensation(replace(state, error=info), saga, CAUSE_TIMED_OUT, now, events)


def on_cancel(
    state: RunState, saga: Saga, now: datetime, interrupted_at: datetime | None = None
) -> Progress:
    """Act on an operator's cancel: compensate before the pivot, otherwise keep going."""
    if past_pivot(state, saga):
        events = [
            NewEvent(
                EventKind.CANCEL_REJECTED,
                at=now,
                detail={"reason": "the pivot has succeeded; the saga only moves forward"},
            )
        ]
        return base(state, now, events, step=saga.steps[state.step_index].name, clear_cancel=True)
    step = saga.steps[state.step_index]
    events = []
    info = ErrorInfo("Cancelled", "cancelled by an operator", step.name)
    if interrupted_at is not None:
        events.append(failed_event(step, state, info, interrupted_at, now))
    progress = begin_compensation(replace(state, error=info), saga, CAUSE_CANCELLED, now, events)
    return but(progress, clear_cancel=True)


def next_compensation(saga: Saga, start: int) -> int | None:
    """Highest step index at or below ``start`` that has a compensation."""
    for index in range(min(start, len(saga.steps) - 1), -1, -1):
        if saga.steps[index].compensation is not None:
            return index
    return None


def _final_status(cause: str | None) -> tuple[SagaStatus, EventKind]:
    if cause == CAUSE_TIMED_OUT:
        return SagaStatus.TIMED_OUT, EventKind.SAGA_TIMED_OUT
    return SagaStatus.COMPENSATED, EventKind.SAGA_COMPENSATED


def begin_compensation(
    state: RunState, saga: Saga, cause: str, now: datetime, events: list[NewEvent]
) -> Progress:
    """Turn back: compensate from the current step (included) down to the first."""
    events.append(
        NewEvent(
            EventKind.COMPENSATION_STARTED,
            at=now,
            step=saga.steps[state.step_index].name,
            detail={"cause": cause},
        )
    )
    pointer = next_compensation(saga, state.step_index)
    progress = base(
        state,
        now,
        events,
        status=SagaStatus.COMPENSATING,
        compensation_cause=cause,
        error=state.error,
        retry_since=None,
    )
    if pointer is None:
        status, kind = _final_status(cause)
        return finish(progress, status, kind, now, {"cause": cause})
    return but(progress, step_index=pointer, step=saga.steps[pointer].name, attempt=1)


def on_compensation_success(
    state: RunState, saga: Saga, started_at: datetime, now: datetime
) -> Progress:
    """A compensation succeeded: go on with the next one down, or finish."""
    step = saga.steps[state.step_index]
    events = [done_event(EventKind.COMPENSATION_SUCCEEDED, step, state, started_at, now)]
    pointer = next_compensation(saga, state.step_index - 1)
    progress = base(state, now, events, retry_since=None)
    if pointer is None:
        status, kind = _final_status(state.compensation_cause)
        return finish(progress, status, kind, now, {"cause": state.compensation_cause})
    return but(progress, step_index=pointer, step=saga.steps[pointer].name, attempt=1)


def on_compensation_failure(
    state: RunState,
    saga: Saga,
    error: BaseException,
    started_at: datetime,
    now: datetime,
    rand: Rand,
) -> Progress:
    """A compensation failed: retry it (no attempt limit) unless non-retryable or out of budget."""
    step = saga.steps[state.step_index]
    if isinstance(error, RetryLater):
        return _postpone(state, saga, step, error, started_at, now, rand, None)
    policy = saga.policy_for(step)
    info = ErrorInfo.from_exception(error, step.name)
    events = [failed_event(step, state, info, started_at, now, compensating=True)]
    since = state.retry_since or now
    state = replace(state, retry_since=since)
    retryable = policy.is_retryable(error)
    if not retryable or policy.budget_spent(since, now):
        prefix = "compensation failed: "
        return _fail_for_good(state, step, policy, info, now, events, retryable, prefix)
    return _schedule_retry(state, step, policy.delay(state.attempt, rand), now, events, info, None)


def on_unknown_step(state: RunState, step_name: str | None, now: datetime) -> Progress:
    """The stored step does not exist in this definition (renamed?): needs an operator."""
    info = ErrorInfo("UnknownStep", f"the saga definition has no step {step_name!r}", step_name)
    progress = base(state, now, [], error=info)
    return finish(
        progress,
        SagaStatus.FAILED,
        EventKind.SAGA_FAILED,
        now,
        {"reason": str(info)},
        keep_step=True,
    )
