"""Commands the runner gives the store: what a run looks like after a step, and its events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from cloudphone.saga.definition import Saga, Step, StepKind
from cloudphone.saga.outputs import merged_data
from cloudphone.saga.records import ErrorInfo, EventKind, SagaRun
from cloudphone.saga.state import SagaStatus


@dataclass(frozen=True)
class NewEvent:
    """An event to append to a run's history (its seq is assigned by the store)."""

    kind: EventKind
    at: datetime
    step: str | None = None
    attempt: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """The new state of a run after one decision, written atomically with its events.

    The store applies it only while the writer's fencing epoch is current.

    Attributes:
        status: New status.
        step_index: Step to run (or compensate) next; None when there is none.
        step: Name of that step, as stored.
        attempt: Attempt number of that step.
        output_step: The step whose output this progress records (the one that succeeded),
            or None when no output changes.
        output: That step's output (None: it returned nothing); stored under its name.
        error: Last failure to show (None clears it).
        compensation_cause: Why the saga compensates, or None.
        keep_lease: True when this worker goes on driving the run; False releases it.
        next_run_at: When a worker should pick the run up again (None when finished).
        finished: The run became terminal or FAILED: stamp ``finished_at``.
        deadline_noted: The post-pivot deadline event has been recorded.
        clear_cancel: Reset the cancel request (it was acted upon).
        events: Events to append, in order.
        now: When the decision was made.
        retry_since: When the current step (or compensation) first failed; None once the
            run moved to another step. Measures its retry budget.
        carried_step: A plain step whose success this write also records (see
            :func:`carrying`), or None.
        carried_output: That step's output.
    """

    status: SagaStatus
    step_index: int | None
    step: str | None
    attempt: int
    output_step: str | None
    output: dict[str, Any] | None
    error: ErrorInfo | None
    compensation_cause: str | None
    keep_lease: bool
    next_run_at: datetime | None
    finished: bool
    deadline_noted: bool
    clear_cancel: bool
    events: tuple[NewEvent, ...]
    now: datetime
    retry_since: datetime | None = None
    carried_step: str | None = None
    carried_output: dict[str, Any] | None = None

    def outputs_patch(self) -> dict[str, Any] | None:
        """The step outputs this write stores, by step name (None: it stores none)."""
        if self.output_step is None and self.carried_step is None:
            return None
        patch: dict[str, Any] = {}
        if self.carried_step is not None:
            patch[self.carried_step] = self.carried_output
        if self.output_step is not None:
            patch[self.output_step] = self.output
        return patch


_FIELDS = frozenset(f.name for f in fields(Progress))


def progress_of(values: Mapping[str, Any]) -> Progress:
    """A Progress holding ``values``, built without the frozen dataclass's ``__init__``.

    That ``__init__`` sets each of the 19 fields through ``object.__setattr__``, eight times
    slower than filling the instance's dict, and a step builds a few Progress objects on the
    hot path. ``values`` must name every field that has no default (one with a default is
    read from the class when left out); the result is the same frozen, comparable value.

    Raises:
        TypeError: ``values`` names something that is not a field.
    """
    if not values.keys() <= _FIELDS:
        raise TypeError(f"not fields of Progress: {sorted(set(values) - _FIELDS)}")
    progress = object.__new__(Progress)
    progress.__dict__.update(values)
    return progress


def carrying(later: Progress, carried: Progress) -> Progress:
    """``later``, written together with ``carried``: a plain step's success whose write waited.

    The result stores both steps' outputs and appends ``carried``'s events before
    ``later``'s (their seqs follow the order they happened in); every other column is
    ``later``'s, which was decided from the run with ``carried`` applied.
    """
    assert carried.carried_step is None
    assert later.carried_step is None
    return progress_of(
        {
            **later.__dict__,
            "events": (*carried.events, *later.events),
            "carried_step": carried.output_step,
            "carried_output": carried.output,
        }
    )


@dataclass
class RunState:
    """The runner's copy of a claimed run; updated after every committed Progress."""

    id: str
    saga_type: str
    status: SagaStatus
    step_index: int
    step: str | None
    attempt: int
    input: dict[str, Any]
    """The run's input (for a run started before per-step outputs: its merged data)."""
    outputs: dict[str, Any]
    """Each step's latest output by step name (None: it returned nothing)."""
    error: ErrorInfo | None
    compensation_cause: str | None
    epoch: int
    created_at: datetime
    deadline_at: datetime | None
    deadline_noted: bool
    cancel_requested: bool
    last_seq: int = 0
    """The run's ``last_seq`` as of the last committed write: the fence of the next one."""
    worker: str | None = None
    """Id of the worker driving the run, recorded on the attempts it runs."""
    trace_context: dict[str, str] | None = None
    """W3C trace context stored with the run at its start (the parent of its drives' spans)."""
    retry_since: datetime | None = None
    """When the current step (or compensation) first failed, if it has."""
    claimed: SagaRun | None = None
    """The run as stored when it was claimed: the columns the runner never changes."""

    def apply(self, progress: Progress) -> None:
        """Adopt a committed Progress."""
        self.status = progress.status
        if progress.step_index is not None:
            self.step_index = progress.step_index
        self.step = progress.step
        self.attempt = progress.attempt
        if progress.output_step is not None:
            self.outputs[progress.output_step] = progress.output
        self.error = progress.error
        self.compensation_cause = progress.compensation_cause
        self.deadline_noted = progress.deadline_noted
        self.retry_since = progress.retry_since
        if progress.clear_cancel:
            self.cancel_requested = False


@dataclass(frozen=True)
class OperatorChange:
    """What an operator action writes: new column values and events."""

    values: dict[str, Any]
    events: list[NewEvent]
    bump_epoch: bool
    """Fence off the current owner (its next write fails) and hand the run to any worker."""


def state_of(run: SagaRun, saga: Saga) -> RunState:
    """The runner's view of a stored run."""
    try:
        index = saga.step_named(run.current_step).index if run.current_step else len(saga.steps)
    except KeyError:
        index = -1
    return RunState(
        id=run.id,
        saga_type=run.saga_type,
        status=run.status,
        step_index=index,
        step=run.current_step,
        attempt=run.attempt,
        input=run.input,
        outputs=dict(run.outputs),
        error=run.error,
        compensation_cause=run.compensation_cause,
        epoch=run.epoch,
        created_at=run.created_at,
        deadline_at=run.deadline_at,
        deadline_noted=run.deadline_noted,
        cancel_requested=run.cancel_requested,
        last_seq=run.last_seq,
        trace_context=run.trace_context,
        retry_since=run.retry_since,
        claimed=run,
    )


def finished_run(state: RunState, progress: Progress) -> SagaRun | None:
    """The run as stored by ``progress``, the final write of its drive, once it committed.

    What :meth:`SagaEngine.wait` returns for a run this process finished, without reading it
    back: every column is the claimed run's or one the runner wrote. None when ``progress``
    did not finish the run or the state was not built from a stored run.
    """
    claimed = state.claimed
    if claimed is None or not progress.finished:
        return None
    outputs = dict(state.outputs)
    return replace(
        claimed,
        status=progress.status,
        current_step=progress.step,
        data=merged_data(state.input, outputs) if outputs else dict(state.input),
        error=progress.error,
        attempt=progress.attempt,
        compensation_cause=progress.compensation_cause,
        updated_at=progress.now,
        finished_at=progress.now,
        deadline_noted=progress.deadline_noted,
        next_run_at=progress.next_run_at,
        owner=None,
        lease_expires_at=None,
        epoch=state.epoch,
        cancel_requested=state.cancel_requested,
        last_seq=state.last_seq,
        outputs=outputs,
        retry_since=progress.retry_since,
    )


def rides_with(saga: Saga, step: Step) -> Step | None:
    """The transactional step a plain step's success may be written with (None: alone).

    The step right after it, if transactional; never for the pivot, whose success must be on
    record before anything else runs.
    """
    if step.transactional or step.kind is StepKind.PIVOT or step.index + 1 >= len(saga.steps):
        return None
    after = saga.steps[step.index + 1]
    return after if after.transactional else None


def riding_note(saga: Saga, step: Step) -> str:
    """Why lost attempts of ``step`` may have been lost in the step after it."""
    after = rides_with(saga, step)
    if after is None:
        return ""
    return (
        f" (or in {after.name}: {step.name}'s success is written with {after.name}'s"
        " transaction, so a worker lost in it counts as an attempt of this step)"
    )
