"""Saga statuses and the transitions allowed between them; pure, no I/O."""

from __future__ import annotations

from enum import StrEnum

from cloudphone.saga.errors import InvalidTransitionError


class SagaStatus(StrEnum):
    """Where a saga run stands."""

    PENDING = "PENDING"
    """Inserted by ``start()``; no worker has claimed it yet."""

    RUNNING = "RUNNING"
    """PENDING → RUNNING when claimed; also while it waits for a retry of a forward step."""

    COMPENSATING = "COMPENSATING"
    """RUNNING → COMPENSATING when a step before the pivot fails for good, the deadline passes
    before the pivot, or an operator cancels; undoes the started steps in reverse order."""

    COMPLETED = "COMPLETED"
    """RUNNING → COMPLETED when the last step succeeds. Terminal."""

    COMPENSATED = "COMPENSATED"
    """COMPENSATING → COMPENSATED when every compensation succeeded. Terminal."""

    TIMED_OUT = "TIMED_OUT"
    """COMPENSATING → TIMED_OUT: compensated because the deadline passed before the pivot.
    Terminal."""

    FAILED = "FAILED"
    """Any active status → FAILED when it cannot go on by itself (a compensation or a step after
    the pivot failed non-retryably). Waits for an operator: ``retry`` moves it back to RUNNING or
    COMPENSATING; ``resolve`` closes it with a note."""

    @property
    def is_terminal(self) -> bool:
        """True when no worker will move the run any more (FAILED waits for an operator)."""
        return self in TERMINAL

    @property
    def is_active(self) -> bool:
        """True while workers drive the run."""
        return self in ACTIVE


ACTIVE = frozenset({SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING})
TERMINAL = frozenset(
    {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.TIMED_OUT, SagaStatus.FAILED}
)

TRANSITIONS: dict[SagaStatus, frozenset[SagaStatus]] = {
    SagaStatus.PENDING: frozenset(
        # Cancelled before any step started: the first step's compensation still runs (or,
        # when it has none, the run is COMPENSATED at once).
        {SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.COMPENSATED, SagaStatus.FAILED}
    ),
    SagaStatus.RUNNING: frozenset(
        {
            SagaStatus.COMPLETED,
            SagaStatus.COMPENSATING,
            SagaStatus.FAILED,
            # Turning back with nothing to undo passes through COMPENSATING in the same write
            # (the history still shows compensation_started), so it lands here directly.
            SagaStatus.COMPENSATED,
            SagaStatus.TIMED_OUT,
        }
    ),
    SagaStatus.COMPENSATING: frozenset(
        {SagaStatus.COMPENSATED, SagaStatus.TIMED_OUT, SagaStatus.FAILED}
    ),
    SagaStatus.COMPLETED: frozenset(),
    SagaStatus.COMPENSATED: frozenset(),
    SagaStatus.TIMED_OUT: frozenset(),
    # Only an operator moves a FAILED run: retry resumes it in the direction it was going.
    SagaStatus.FAILED: frozenset({SagaStatus.RUNNING, SagaStatus.COMPENSATING}),
}


def can_transition(current: SagaStatus, new: SagaStatus) -> bool:
    """Whether the state machine allows ``current`` → ``new`` (staying put is always allowed)."""
    return new == current or new in TRANSITIONS[current]


def check_transition(current: SagaStatus, new: SagaStatus) -> SagaStatus:
    """Return ``new`` if ``current`` → ``new`` is allowed, else raise InvalidTransitionError."""
    if not can_transition(current, new):
        raise InvalidTransitionError(f"a saga cannot go from {current} to {new}")
    return new
