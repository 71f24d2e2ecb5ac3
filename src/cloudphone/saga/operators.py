"""Operator actions (retry, cancel, resolve) decided on a locked run; pure, no I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudphone.saga import decide
from cloudphone.saga.definition import Saga
from cloudphone.saga.errors import OperatorActionError
from cloudphone.saga.progress import NewEvent, OperatorChange, state_of
from cloudphone.saga.records import EventKind, SagaRun
from cloudphone.saga.state import SagaStatus, check_transition
from cloudphone.saga.store.rows import progress_values


def _who(actor: str | None, note: str | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    if actor:
        detail["actor"] = actor
    if note:
        detail["note"] = note
    return detail


def _needs_operator(run: SagaRun, action: str) -> None:
    if run.status is not SagaStatus.FAILED:
        raise OperatorActionError(
            f"cannot {action} saga {run.id}: it is {run.status}, only FAILED sagas can be "
            f"{'retried' if action == 'retry' else 'resolved'}"
        )
    if run.resolution is not None:
        raise OperatorActionError(f"cannot {action} saga {run.id}: it was already resolved")


def retry(
    run: SagaRun, now: datetime, actor: str | None, note: str | None, forward: bool = False
) -> OperatorChange:
    """Resume a FAILED run at the step that failed, in the direction it was going.

    With ``forward`` a run that failed while compensating goes forward again instead, from the
    step whose compensation failed (forward recovery: e.g. the provider did take the refund,
    so the saga should finish rather than undo). That step runs again, so it must be idempotent
    like every step.
    """
    _needs_operator(run, "retry")
    if forward and not run.compensation_cause:
        raise OperatorActionError(
            f"saga {run.id} failed going forward; a plain retry already resumes it forward"
        )
    compensating = bool(run.compensation_cause) and not forward
    status = SagaStatus.COMPENSATING if compensating else SagaStatus.RUNNING
    check_transition(run.status, status)
    values: dict[str, Any] = {
        "status": status.value,
        "attempt": 1,
        "owner": None,
        "lease_expires_at": None,
        "next_run_at": now,
        "finished_at": None,
        "cancel_requested": False,
        "updated_at": now,
        "retry_since": None,  # a fresh retry budget
    }
    if forward:
        values["compensation_cause"] = None
    event = NewEvent(
        EventKind.OPERATOR_RETRY,
        at=now,
        step=run.current_step,
        attempt=1,
        detail={
            **_who(actor, note),
            "resumes": status.value,
            **({"forward": True} if forward else {}),
        },
    )
    return OperatorChange(values, [event], bump_epoch=True)


def resolve(run: SagaRun, now: datetime, actor: str | None, note: str) -> OperatorChange:
    """Close a FAILED run by hand; it stays FAILED with the operator's note."""
    if not note.strip():
        raise OperatorActionError("resolving a saga needs a note saying what was done by hand")
    _needs_operator(run, "resolve")
    event = NewEvent(
        EventKind.OPERATOR_RESOLVED, at=now, step=run.current_step, detail=_who(actor, note)
    )
    return OperatorChange({"resolution": note, "updated_at": now}, [event], bump_epoch=True)


def cancel(run: SagaRun, saga: Saga, now: datetime, actor: str | None) -> OperatorChange:
    """Cancel a run before its pivot: compensate what started (at once if nobody drives it)."""
    requested = NewEvent(
        EventKind.CANCEL_REQUESTED, at=now, step=run.current_step, detail=_who(actor)
    )
    # A PENDING run is cancelled like an unclaimed RUNNING one: no step ran, but the caller may
    # have written business rows in the transaction that started it, so the first step's
    # compensation (safe when there is nothing to undo, like every compensation) still runs.
    if run.status not in (SagaStatus.PENDING, SagaStatus.RUNNING):
        raise OperatorActionError(f"cannot cancel saga {run.id}: it is {run.status}")
    state = state_of(run, saga)
    if state.step_index < 0:
        raise OperatorActionError(
            f"cannot cancel saga {run.id}: its step {run.current_step!r} is not in the saga "
            "definition; deploy the definition that has it, or resolve the saga by hand"
        )
    if decide.past_pivot(state, saga):
        raise OperatorActionError(
            f"cannot cancel saga {run.id}: its pivot has succeeded, it only moves forward"
        )
    if run.cancel_requested:
        raise OperatorActionError(f"saga {run.id} is already being cancelled")
    if run.owner is not None and _lease_alive(run, now):
        # The owner interrupts its attempt when it next renews the lease or writes.
        return OperatorChange(
            {"cancel_requested": True, "updated_at": now}, [requested], bump_epoch=False
        )
    progress = decide.on_cancel(state, saga, now)
    compensating = progress_values(progress, None)
    compensating.update(
        owner=None, lease_expires_at=None, cancel_requested=False, next_run_at=progress.next_run_at
    )
    return OperatorChange(compensating, [requested, *progress.events], bump_epoch=True)


def _lease_alive(run: SagaRun, now: datetime) -> bool:
    return run.lease_expires_at is not None and run.lease_expires_at > now
