"""Operator actions (retry, cancel, resolve, migrate, fork) decided on a locked run; pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudphone.saga import decide
from cloudphone.saga.definition import Saga
from cloudphone.saga.errors import OperatorActionError
from cloudphone.saga.history import StepsDone
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


MIGRATABLE = frozenset(
    {SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.FAILED}
)
"""Statuses a run can be migrated in: active ones, and FAILED ones (retried afterwards)."""


def migrate(
    run: SagaRun,
    done: StepsDone,
    source: Saga | None,
    target: Saga,
    now: datetime,
    actor: str | None,
    note: str | None,
) -> OperatorChange:
    """Move a run to another version of its saga; steps are matched by name.

    Refused when the target lacks the run's current step or any step it already did, orders
    those steps differently, would leave a done step's compensation out of the way back, or
    puts the run on the other side of a pivot. ``source`` (the run's own version) may be
    None when this process does not have it: the history then says which step was the pivot.
    An active run is fenced off its owner and handed to any worker that has the target.
    """
    _migratable(run, target)
    names = [step.name for step in target.steps]
    at = _position(run, names, target)
    missing = [n for n in done.done if n not in names]
    if missing:
        raise OperatorActionError(
            f"cannot migrate saga {run.id}: version {target.version} lacks "
            f"{', '.join(missing)}, which it has already done"
        )
    positions = [names.index(name) for name in done.done]
    if positions != sorted(positions):
        raise OperatorActionError(
            f"cannot migrate saga {run.id}: version {target.version} orders the steps it has "
            f"done ({', '.join(done.done)}) differently"
        )
    compensating = run.status is SagaStatus.COMPENSATING or bool(run.compensation_cause)
    if compensating:
        # On the way back, every step still to undo must lie at or below the current one.
        late = [n for n in done.done if n not in done.undone and names.index(n) > at]
        where = "after"
    else:
        late = [n for n in done.done if names.index(n) >= at]
        where = "at or after"
    if late:
        raise OperatorActionError(
            f"cannot migrate saga {run.id}: version {target.version} puts {', '.join(late)}, "
            f"already done, {where} its current step {run.current_step!r}"
        )
    _keeps_pivot(run, done, source, target, at, compensating)
    skipped = [n for n in names[:at] if n not in done.done]
    values: dict[str, Any] = {"saga_version": target.version, "updated_at": now}
    if run.status.is_active:
        values.update(owner=None, lease_expires_at=None, next_run_at=now)
    detail = {**_who(actor, note), "from_version": run.saga_version, "to_version": target.version}
    if skipped:
        detail["skipped"] = skipped
    event = NewEvent(EventKind.OPERATOR_MIGRATED, at=now, step=run.current_step, detail=detail)
    return OperatorChange(values, [event], bump_epoch=True)


def _migratable(run: SagaRun, target: Saga) -> None:
    if run.status not in MIGRATABLE:
        raise OperatorActionError(
            f"cannot migrate saga {run.id}: it is {run.status}; only active and FAILED runs move"
        )
    if run.resolution is not None:
        raise OperatorActionError(f"cannot migrate saga {run.id}: it was resolved by hand")
    if target.name != run.saga_type:
        raise OperatorActionError(
            f"cannot migrate saga {run.id} ({run.saga_type}) to a version of {target.name!r}"
        )
    if target.version == run.saga_version:
        raise OperatorActionError(f"saga {run.id} is already on version {target.version}")


def _position(run: SagaRun, names: list[str], target: Saga) -> int:
    """Where the run's current step is in the target (refused when missing)."""
    if run.current_step not in names:
        raise OperatorActionError(
            f"cannot migrate saga {run.id}: version {target.version} of {target.name} has no "
            f"step {run.current_step!r} (its current step)"
        )
    return names.index(run.current_step)


def _keeps_pivot(
    run: SagaRun,
    done: StepsDone,
    source: Saga | None,
    target: Saga,
    at: int,
    compensating: bool,
) -> None:
    """Refuse a move that crosses a pivot: a run past its pivot stays past one, and back."""
    if source is not None:
        pivot = source.pivot_index
        passed = pivot is not None and source.steps[pivot].name in done.done
    else:
        passed = done.pivot is not None
    target_pivot = target.steps[target.pivot_index].name if target.pivot_index is not None else None
    if compensating:
        passed_there = target_pivot in done.done
    else:
        passed_there = target.pivot_index is not None and target.pivot_index < at
    if passed and not passed_there:
        raise OperatorActionError(
            f"cannot migrate saga {run.id}: it has passed its pivot, and in version "
            f"{target.version} its step {run.current_step!r} is not past the pivot "
            f"({target_pivot or 'there is none'}): it could be undone there"
        )
    if passed_there and not passed:
        raise OperatorActionError(
            f"cannot migrate saga {run.id}: version {target.version} has it past the pivot "
            f"{target_pivot!r}, but it has not passed a pivot"
        )


def check_fork(run: SagaRun, done: StepsDone, saga: Saga, from_step: str, force: bool) -> list[str]:
    """Whether ``run`` may be forked from ``from_step``; returns what ``force`` overrode.

    Never allowed: forking a run that is not terminal, or from a step its version lacks.
    Allowed only with ``force`` (and then recorded): re-running a pivot the original
    completed, going on after a step the original undid, or after one it never completed.
    """
    if not run.status.is_terminal:
        raise OperatorActionError(
            f"cannot fork saga {run.id}: it is {run.status}; only a finished run can be forked"
        )
    names = [step.name for step in saga.steps]
    if from_step not in names:
        raise OperatorActionError(
            f"cannot fork saga {run.id}: version {saga.version} of {saga.name} has no step "
            f"{from_step!r} (steps: {', '.join(names)})"
        )
    at = names.index(from_step)
    reasons = []
    pivot = saga.pivot_index
    if pivot is not None and at <= pivot and names[pivot] in done.done:
        reasons.append(
            f"{from_step} is not after the pivot {names[pivot]}, which the original completed: "
            "the fork would do it again"
        )
    undone = [n for n in names[:at] if n in done.undone]
    if undone:
        reasons.append(f"the original undid {', '.join(undone)}, which the fork would not redo")
    never = [n for n in names[:at] if n not in done.done]
    if never:
        reasons.append(f"the original never completed {', '.join(never)}")
    if reasons and not force:
        raise OperatorActionError(
            f"cannot fork saga {run.id} from {from_step}: {'; '.join(reasons)} "
            "(forcing the fork overrides this, and the histories then say so)"
        )
    return reasons


def forked(
    run: SagaRun,
    fork_id: str,
    from_step: str,
    now: datetime,
    actor: str | None,
    note: str | None,
    overrode: list[str],
) -> OperatorChange:
    """The original's side of a fork: a ``run_forked`` event naming the new run."""
    detail = {"fork": fork_id, **fork_facts(from_step, actor, note, overrode)}
    event = NewEvent(EventKind.RUN_FORKED, at=now, step=from_step, detail=detail)
    return OperatorChange({"updated_at": now}, [event], bump_epoch=False)


def fork_facts(
    from_step: str, actor: str | None, note: str | None, overrode: list[str]
) -> dict[str, Any]:
    """What both histories of a fork say about it (the new run's ``saga_started`` too)."""
    facts: dict[str, Any] = {"from_step": from_step, **_who(actor, note)}
    if overrode:
        facts.update(forced=True, overrode=overrode)
    return facts
