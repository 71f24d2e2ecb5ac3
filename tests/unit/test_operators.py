"""Operator actions on stored runs: retry, resolve and cancel, decided without I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudphone.saga import (
    ErrorInfo,
    EventKind,
    OperatorActionError,
    Saga,
    SagaRun,
    SagaStatus,
    operators,
)
from cloudphone.saga.state import can_transition

S = SagaStatus
K = EventKind
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
ERROR = ErrorInfo("Boom", "provider down", "B")


async def act(ctx: Any) -> None:
    return None


async def undo(ctx: Any) -> None:
    return None


def make_saga(*, compensate: bool = True) -> Saga:
    """A, B (compensatable), P (pivot), C (retriable)."""
    saga = Saga("op_saga")
    for name in ("A", "B"):
        handle = saga.step(name)(act)
        if compensate:
            handle.compensate(undo)
    saga.step("P", pivot=True)(act)
    saga.step("C")(act)
    return saga


def make_run(**changes: Any) -> SagaRun:
    """A FAILED, unresolved run at step B, attempt 3, last owned by w1; ``changes`` applied."""
    run = SagaRun(
        id="run-1",
        saga_type="op_saga",
        status=S.FAILED,
        current_step="B",
        data={"input": 1},
        error=ERROR,
        attempt=3,
        compensation_cause=None,
        idempotency_key=None,
        started_by=None,
        created_at=NOW - timedelta(minutes=5),
        updated_at=NOW - timedelta(minutes=1),
        finished_at=NOW - timedelta(minutes=1),
        deadline_at=None,
        deadline_noted=False,
        next_run_at=None,
        owner="w1",
        lease_expires_at=None,
        epoch=7,
        cancel_requested=False,
        resolution=None,
        input={"input": 1},
        outputs={"A": {"a": 2}},
        retry_since=NOW - timedelta(minutes=2),
    )
    return replace(run, **changes)


def events(change: operators.OperatorChange) -> list[tuple[EventKind, str | None, int | None]]:
    assert all(event.at == NOW for event in change.events)
    return [(e.kind, e.step, e.attempt) for e in change.events]


# --- retry ---------------------------------------------------------------------------------------


def test_retry_resumes_a_failed_forward_run_at_its_step() -> None:
    change = operators.retry(make_run(), NOW, "alice", "provider is back")
    assert change.values == {
        "status": "RUNNING",
        "attempt": 1,
        "owner": None,
        "lease_expires_at": None,
        "next_run_at": NOW,
        "finished_at": None,
        "cancel_requested": False,
        "updated_at": NOW,
        "retry_since": None,
    }
    assert change.bump_epoch is True
    assert events(change) == [(K.OPERATOR_RETRY, "B", 1)]
    assert change.events[0].detail == {
        "actor": "alice",
        "note": "provider is back",
        "resumes": "RUNNING",
    }


@pytest.mark.parametrize("cause", ["failed", "timed_out", "cancelled"])
def test_retry_resumes_compensating_when_it_was_compensating(cause: str) -> None:
    change = operators.retry(make_run(compensation_cause=cause), NOW, None, None)
    assert change.values["status"] == "COMPENSATING"
    assert change.events[0].detail == {"resumes": "COMPENSATING"}
    assert can_transition(S.FAILED, S(change.values["status"]))


@pytest.mark.parametrize("status", [s for s in S if s is not S.FAILED])
def test_retry_refuses_runs_that_are_not_failed(status: SagaStatus) -> None:
    with pytest.raises(
        OperatorActionError,
        match=rf"cannot retry saga run-1: it is {status}, "
        "only FAILED sagas can be retried",
    ):
        operators.retry(make_run(status=status), NOW, "alice", None)


def test_retry_refuses_a_resolved_run() -> None:
    with pytest.raises(
        OperatorActionError, match="cannot retry saga run-1: it was already resolved"
    ):
        operators.retry(make_run(resolution="refunded by hand"), NOW, "alice", None)


# --- resolve -------------------------------------------------------------------------------------


def test_resolve_closes_a_failed_run_with_the_note() -> None:
    change = operators.resolve(make_run(), NOW, "bob", "refunded by hand")
    assert change.values == {"resolution": "refunded by hand", "updated_at": NOW}
    assert "status" not in change.values  # it stays FAILED
    assert change.bump_epoch is True
    assert events(change) == [(K.OPERATOR_RESOLVED, "B", None)]
    assert change.events[0].detail == {"actor": "bob", "note": "refunded by hand"}


@pytest.mark.parametrize("note", ["", "   ", "\n\t"])
def test_resolve_needs_a_note(note: str) -> None:
    with pytest.raises(OperatorActionError, match="resolving a saga needs a note"):
        operators.resolve(make_run(), NOW, "bob", note)


@pytest.mark.parametrize("status", [s for s in S if s is not S.FAILED])
def test_resolve_refuses_runs_that_are_not_failed(status: SagaStatus) -> None:
    with pytest.raises(
        OperatorActionError,
        match=rf"it is {status}, only FAILED sagas can be "
        "resolved",
    ):
        operators.resolve(make_run(status=status), NOW, "bob", "done")


def test_resolve_refuses_a_second_resolution() -> None:
    with pytest.raises(OperatorActionError, match="already resolved"):
        operators.resolve(make_run(resolution="first"), NOW, "bob", "second")


# --- cancel --------------------------------------------------------------------------------------


def test_cancel_pending_run_undoes_the_first_step() -> None:
    """No step ran, but the start's transaction may have written rows: A's undo still runs."""
    run = make_run(
        status=S.PENDING,
        current_step="A",
        attempt=1,
        owner=None,
        error=None,
        next_run_at=NOW,
        finished_at=None,
    )
    change = operators.cancel(run, make_saga(), NOW, "carol")
    assert change.values["status"] == "COMPENSATING"
    assert change.values["current_step"] == "A"
    assert change.values["compensation_cause"] == "cancelled"
    assert change.values["owner"] is None
    assert change.values["next_run_at"] == NOW
    assert change.bump_epoch is True
    assert events(change) == [(K.CANCEL_REQUESTED, "A", None), (K.COMPENSATION_STARTED, "A", None)]
    assert change.events[0].detail == {"actor": "carol"}
    assert can_transition(S.PENDING, S.COMPENSATING)


def test_cancel_pending_run_without_undo_is_compensated_at_once() -> None:
    run = make_run(
        status=S.PENDING,
        current_step="A",
        attempt=1,
        owner=None,
        error=None,
        next_run_at=NOW,
        finished_at=None,
    )
    change = operators.cancel(run, make_saga(compensate=False), NOW, None)
    assert change.values["status"] == "COMPENSATED"
    assert change.values["finished_at"] == NOW
    assert events(change)[-1] == (K.SAGA_COMPENSATED, None, None)
    assert can_transition(S.PENDING, S.COMPENSATED)


def running(**changes: Any) -> SagaRun:
    """A RUNNING run at B, attempt 2, unfinished."""
    base = {"status": S.RUNNING, "attempt": 2, "finished_at": None, "next_run_at": NOW}
    return make_run(**{**base, **changes})


def test_cancel_with_a_live_lease_only_asks_the_owner() -> None:
    """The owner interrupts its attempt; the epoch is not bumped so it can still write."""
    run = running(owner="w1", lease_expires_at=NOW + timedelta(seconds=5))
    change = operators.cancel(run, make_saga(), NOW, "carol")
    assert change.values == {"cancel_requested": True, "updated_at": NOW}
    assert change.bump_epoch is False
    assert events(change) == [(K.CANCEL_REQUESTED, "B", None)]


@pytest.mark.parametrize(
    ("owner", "lease"),
    [(None, None), ("w1", NOW - timedelta(seconds=1)), ("w1", NOW), ("w1", None)],
    ids=["no-owner", "expired", "expiring-now", "no-lease"],
)
def test_cancel_without_a_live_owner_starts_compensating(
    owner: str | None, lease: datetime | None
) -> None:
    change = operators.cancel(running(owner=owner, lease_expires_at=lease), make_saga(), NOW, None)
    values = change.values
    assert (values["status"], values["current_step"], values["attempt"]) == ("COMPENSATING", "B", 1)
    assert values["compensation_cause"] == "cancelled"
    assert values["error"] == {
        "type": "Cancelled",
        "message": "cancelled by an operator",
        "step": "B",
    }
    assert (values["owner"], values["lease_expires_at"]) == (None, None)
    assert (values["cancel_requested"], values["next_run_at"]) == (False, NOW)
    assert (values["finished_at"], values["updated_at"]) == (None, NOW)
    assert "data" not in values
    assert change.bump_epoch is True
    assert events(change) == [(K.CANCEL_REQUESTED, "B", None), (K.COMPENSATION_STARTED, "B", None)]
    assert change.events[1].detail == {"cause": "cancelled"}


def test_cancel_with_nothing_to_undo_is_compensated_at_once() -> None:
    change = operators.cancel(running(owner=None), make_saga(compensate=False), NOW, None)
    assert (change.values["status"], change.values["finished_at"]) == ("COMPENSATED", NOW)
    assert change.values["next_run_at"] is None
    assert [k for k, _, _ in events(change)] == [
        K.CANCEL_REQUESTED,
        K.COMPENSATION_STARTED,
        K.SAGA_COMPENSATED,
    ]


def test_cancel_at_the_pivot_is_still_allowed() -> None:
    """The pivot has not succeeded yet; it has no undo here, so compensation starts at B."""
    change = operators.cancel(running(current_step="P", owner=None), make_saga(), NOW, None)
    assert (change.values["status"], change.values["current_step"]) == ("COMPENSATING", "B")
    assert events(change)[-1] == (K.COMPENSATION_STARTED, "P", None)


@pytest.mark.parametrize("live", [True, False])
def test_cancel_past_the_pivot_is_refused(live: bool) -> None:
    lease = NOW + timedelta(seconds=5) if live else None
    run = running(current_step="C", lease_expires_at=lease)
    with pytest.raises(
        OperatorActionError, match="cannot cancel saga run-1: its pivot has succeeded"
    ):
        operators.cancel(run, make_saga(), NOW, "carol")


def test_cancel_twice_is_refused() -> None:
    run = running(cancel_requested=True, lease_expires_at=NOW + timedelta(seconds=5))
    with pytest.raises(OperatorActionError, match="saga run-1 is already being cancelled"):
        operators.cancel(run, make_saga(), NOW, "carol")


@pytest.mark.parametrize(
    "status", [S.COMPENSATING, S.COMPLETED, S.COMPENSATED, S.TIMED_OUT, S.FAILED]
)
def test_cancel_refuses_runs_that_are_not_pending_or_running(status: SagaStatus) -> None:
    with pytest.raises(OperatorActionError, match=rf"cannot cancel saga run-1: it is {status}"):
        operators.cancel(make_run(status=status), make_saga(), NOW, "carol")


# --- the runner's view of a stored run -----------------------------------------------------------


def test_state_of_maps_the_stored_step_to_its_index() -> None:
    saga = make_saga()
    state = operators.state_of(running(current_step="P", compensation_cause=None), saga)
    assert (state.status, state.step_index, state.step, state.attempt) == (S.RUNNING, 2, "P", 2)
    assert (state.id, state.epoch, state.input, state.error) == ("run-1", 7, {"input": 1}, ERROR)
    assert (state.outputs, state.retry_since) == ({"A": {"a": 2}}, NOW - timedelta(minutes=2))


def test_state_of_without_a_step_points_past_the_last() -> None:
    assert operators.state_of(make_run(current_step=None), make_saga()).step_index == 4


def test_state_of_with_an_unknown_step_points_nowhere() -> None:
    assert operators.state_of(make_run(current_step="RENAMED"), make_saga()).step_index == -1


def test_cancel_at_an_unknown_step_never_claims_compensated() -> None:
    """A stored step missing from the definition (renamed) must not be 'undone' by skipping."""
    run = running(current_step="RENAMED", owner=None)
    try:
        change = operators.cancel(run, make_saga(), NOW, "carol")
    except OperatorActionError:
        return  # refusing is fine
    assert change.values.get("status") != "COMPENSATED", events(change)


def test_state_of_keeps_the_recorded_deadline_note() -> None:
    """A run taken over after its post-pivot deadline was noted does not note it again."""
    run = replace(running(current_step="C", compensation_cause=None), deadline_noted=True)
    assert operators.state_of(run, make_saga()).deadline_noted is True
