"""Read models: a saga run's current state and the events of its history."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cloudphone.saga.state import SagaStatus


class EventKind(StrEnum):
    """What an entry in a saga's history records."""

    SAGA_STARTED = "saga_started"
    """``start()`` inserted the run; detail holds the idempotency key if any (a fork's: the
    run it was forked from, ``forked_from``, and ``from_step``, ``actor``, ``note``, ``forced``)."""
    STEP_SUCCEEDED = "step_succeeded"
    """An attempt of a step finished; detail: started_at, duration_ms, worker, and ``pivot:
    true`` when the step is the saga's pivot. (Its output is kept under the step in the run's
    ``outputs``.)"""
    STEP_FAILED = "step_failed"
    """An attempt of a step raised or timed out; detail: error type and message."""
    STEP_POSTPONED = "step_postponed"
    """The step raised RetryLater: it runs again at next_run_at without a failed attempt."""
    RETRY_SCHEDULED = "retry_scheduled"
    """The failed attempt will be retried; detail: next_run_at, delay_ms."""
    COMPENSATION_STARTED = "compensation_started"
    """The saga turned back; detail: cause (failed, timed_out, cancelled)."""
    COMPENSATION_SUCCEEDED = "compensation_succeeded"
    """A step's compensation finished."""
    COMPENSATION_FAILED = "compensation_failed"
    """An attempt of a compensation raised or timed out."""
    DEADLINE_EXCEEDED = "deadline_exceeded"
    """The deadline passed before the pivot; the saga compensates and ends TIMED_OUT."""
    DEADLINE_PASSED = "deadline_passed"
    """The deadline passed after the pivot; recorded, and the saga keeps moving forward."""
    LEASE_TAKEOVER = "lease_takeover"
    """A worker claimed a run whose owner's lease had expired (or its own, after a restart)."""
    CANCEL_REQUESTED = "cancel_requested"
    """An operator asked to cancel the run."""
    CANCEL_REJECTED = "cancel_rejected"
    """A cancel arrived after the pivot had succeeded; the saga keeps moving forward."""
    OPERATOR_RETRY = "operator_retry"
    """An operator resumed a FAILED run at the step that failed."""
    OPERATOR_RESOLVED = "operator_resolved"
    """An operator closed a FAILED run by hand; detail holds the note."""
    OPERATOR_MIGRATED = "operator_migrated"
    """An operator moved the run to another version of its saga; detail: ``from_version``,
    ``to_version``, actor, note, and the target's steps before the current one that this run
    never ran (``skipped``)."""
    RUN_FORKED = "run_forked"
    """An operator forked this run: detail names the new run (``fork``), ``from_step``, actor,
    note, and ``forced`` (with what the force overrode) when a refusal was overridden."""
    SAGA_COMPLETED = "saga_completed"
    """Every step succeeded."""
    SAGA_COMPENSATED = "saga_compensated"
    """Every started step was undone."""
    SAGA_TIMED_OUT = "saga_timed_out"
    """Compensated because the deadline passed before the pivot."""
    SAGA_FAILED = "saga_failed"
    """The run needs an operator; detail holds the reason (and ``budget_exhausted`` with
    ``failing_since`` when a step's retry budget ran out)."""


@dataclass(frozen=True)
class StartedRun:
    """What :meth:`SagaEngine.start_run <cloudphone.saga.SagaEngine.start_run>` did."""

    id: str
    """The run's id (the earlier run's, when the idempotency key found one)."""
    created: bool
    """Whether this call inserted the run (False: an equal idempotency key found it)."""


@dataclass(frozen=True)
class ErrorInfo:
    """Why an attempt failed: the exception type and message, and the step."""

    type: str
    message: str
    step: str | None = None

    @classmethod
    def from_exception(cls, error: BaseException, step: str | None) -> ErrorInfo:
        """Describe ``error`` raised by ``step`` (message trimmed to 2,000 characters)."""
        # PostgreSQL cannot store NUL, and messages may quote anything.
        message = (str(error) or repr(error)).replace("\x00", "\\x00")
        return cls(type=type(error).__name__, message=message[:2000], step=step)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored."""
        return {"type": self.type, "message": self.message, "step": self.step}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> ErrorInfo | None:
        """Parse the stored JSON form."""
        if raw is None:
            return None
        return cls(type=str(raw["type"]), message=str(raw["message"]), step=raw.get("step"))

    def __str__(self) -> str:
        where = f" in {self.step}" if self.step else ""
        return f"{self.type}{where}: {self.message}"


@dataclass(frozen=True)
class SagaRun:
    """A saga run as stored now.

    Attributes:
        id: Run id (a UUID string).
        saga_type: Name of its saga definition.
        status: Current status.
        current_step: Step being run, retried or compensated; None once COMPLETED.
        data: The merged view: the input, then every completed step's output.
        error: Last failure, if any.
        attempt: Attempt number of the current step.
        compensation_cause: Why it compensates (failed, timed_out, cancelled), or None.
        idempotency_key: Key given to ``start()``, if any.
        started_by: Who started it (a user id given to ``start()``), if known.
        created_at: When ``start()`` inserted it.
        updated_at: Last change.
        finished_at: When it became terminal (FAILED included).
        deadline_at: When its deadline passes, or None.
        deadline_noted: The deadline passed after the pivot and that was recorded.
        next_run_at: When a worker should next pick it up (None when not active).
        owner: Worker holding its lease, or None.
        lease_expires_at: When the owner's lease runs out unless renewed.
        epoch: Fencing token; bumped by every claim and operator action.
        cancel_requested: An operator asked to cancel it.
        resolution: Note of the operator who resolved it by hand, or None.
        last_seq: Sequence number of its latest event (its history has that many).
        trace_context: W3C trace context (``traceparent``, ``tracestate``) of the start, when
            it was traced: the spans of every drive of the run join that trace.
        saga_version: Version of the saga definition the run is pinned to (it finishes on
            it unless an operator migrates it).
        forked_from: The run this one was forked from, or None.
        input: The input given to ``start()``, as stored (for a run started before per-step
            outputs were kept: its merged data).
        outputs: Each step's latest output by step name (None: it returned nothing).
        retry_since: When its current step (or compensation) first failed, if it has: the
            start of that step's retry budget.
    """

    id: str
    saga_type: str
    status: SagaStatus
    current_step: str | None
    data: dict[str, Any]
    error: ErrorInfo | None
    attempt: int
    compensation_cause: str | None
    idempotency_key: str | None
    started_by: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    deadline_at: datetime | None
    deadline_noted: bool
    next_run_at: datetime | None
    owner: str | None
    lease_expires_at: datetime | None
    epoch: int
    cancel_requested: bool
    resolution: str | None
    last_seq: int = 0
    trace_context: dict[str, str] | None = None
    saga_version: int = 1
    forked_from: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    retry_since: datetime | None = None

    def started_with(self, fields: Mapping[str, Any]) -> bool:
        """Whether its input holds each of ``fields`` at that value.

        An Idempotency-Key's repeat is the same request only then.
        """
        return all(self.input.get(name) == value for name, value in fields.items())

    @property
    def needs_attention(self) -> bool:
        """FAILED and not resolved by an operator."""
        return self.status is SagaStatus.FAILED and self.resolution is None


@dataclass(frozen=True)
class SagaEvent:
    """One entry of a run's append-only history.

    Attributes:
        seq: Position in the run's history, from 1, without gaps.
        kind: What happened.
        step: The step it concerns, if any.
        attempt: The attempt it concerns, if any.
        detail: Extra facts (error, delays, worker ids, notes).
        at: When it happened.
    """

    seq: int
    kind: EventKind
    step: str | None
    attempt: int | None
    detail: dict[str, Any]
    at: datetime
