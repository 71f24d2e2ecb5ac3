"""The parts every decision is made of: a Progress like the run's, the events of an attempt.

Pure, like :mod:`cloudphone.saga.decide`, which composes them into its rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudphone.saga.definition import Saga, Step
from cloudphone.saga.progress import NewEvent, Progress, RunState, progress_of
from cloudphone.saga.records import ErrorInfo, EventKind
from cloudphone.saga.state import SagaStatus


def deadline_passed(state: RunState, now: datetime) -> bool:
    """True when the run has a deadline and ``now`` is past it."""
    return state.deadline_at is not None and now >= state.deadline_at


def ms(start: datetime, end: datetime) -> float:
    """Milliseconds from ``start`` to ``end`` (to the microsecond)."""
    return round((end - start).total_seconds() * 1000, 3)


def base(state: RunState, now: datetime, events: list[NewEvent], **changes: Any) -> Progress:
    """A Progress that keeps everything as it is and holds the lease, but for ``changes``."""
    fields: dict[str, Any] = {
        "status": state.status,
        "step_index": state.step_index,
        "step": state.step,
        "attempt": state.attempt,
        "output_step": None,
        "output": None,
        "error": state.error,
        "compensation_cause": state.compensation_cause,
        "keep_lease": True,
        "next_run_at": now,
        "finished": False,
        "deadline_noted": state.deadline_noted,
        "clear_cancel": False,
        "events": tuple(events),
        "now": now,
        "retry_since": state.retry_since,
    }
    fields.update(changes)
    return progress_of(fields)


def but(progress: Progress, **changes: Any) -> Progress:
    """``progress`` with ``changes`` (a cheaper dataclasses.replace for this hot path)."""
    return progress_of({**progress.__dict__, **changes})


def with_deadline_note(
    state: RunState, saga: Saga, now: datetime, events: list[NewEvent], forward_after: bool
) -> bool:
    """Append the post-pivot deadline event once; returns the new ``deadline_noted``."""
    if state.deadline_noted or not forward_after or not deadline_passed(state, now):
        return state.deadline_noted
    assert state.deadline_at is not None
    events.append(
        NewEvent(
            EventKind.DEADLINE_PASSED,
            at=now,
            detail={
                "deadline_at": state.deadline_at.isoformat(),
                "note": "past the pivot: the saga keeps moving forward",
            },
        )
    )
    return True


def finish(
    progress: Progress,
    status: SagaStatus,
    kind: EventKind,
    now: datetime,
    detail: dict[str, Any] | None = None,
    keep_step: bool = False,
) -> Progress:
    """``progress`` ending the run as ``status``, with the saga's ``kind`` event last."""
    events = (*progress.events, NewEvent(kind, at=now, detail=detail or {}))
    return but(
        progress,
        status=status,
        step_index=progress.step_index if keep_step else None,
        step=progress.step if keep_step else None,
        keep_lease=False,
        next_run_at=None,
        finished=True,
        events=events,
    )


def done_event(
    kind: EventKind, step: Step, state: RunState, started_at: datetime, now: datetime
) -> NewEvent:
    """The event of an attempt that ended well (``kind``: succeeded or compensated)."""
    return NewEvent(
        kind,
        at=now,
        step=step.name,
        attempt=state.attempt,
        detail=attempt_detail(state, started_at, now),
    )


def attempt_detail(state: RunState, started_at: datetime, now: datetime) -> dict[str, Any]:
    """When an attempt ran, for how long, and on which worker."""
    detail: dict[str, Any] = {
        "started_at": started_at.isoformat(),
        "duration_ms": ms(started_at, now),
    }
    if state.worker is not None:
        detail["worker"] = state.worker
    return detail


def failed_event(
    step: Step,
    state: RunState,
    info: ErrorInfo,
    started_at: datetime,
    now: datetime,
    compensating: bool = False,
) -> NewEvent:
    """The event of an attempt (or compensation) that failed with ``info``."""
    kind = EventKind.COMPENSATION_FAILED if compensating else EventKind.STEP_FAILED
    return NewEvent(
        kind,
        at=now,
        step=step.name,
        attempt=state.attempt,
        detail={"error": info.to_dict(), **attempt_detail(state, started_at, now)},
    )
